use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::{
    api_keys::{self, KeySpec, Role},
    audit::{self, Actor, Event, Outcome, Verdict},
    config::{ApiConfig, Config},
    db,
};

/// Bank statement export API: request exports, poll them, download signed files.
///
/// Configuration comes from environment variables (see .env.example).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the OpenAPI document (YAML); `openapi.yaml` is this output.
    Openapi,
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the whole hash chain: exits non-zero, naming the first row that does not hold,
    /// when a row was altered, deleted or inserted. Prints the last row's number and hash:
    /// keep them elsewhere to notice a later truncation of the chain's end.
    Verify {
        /// Also require the chain to hold this row with this hash (`SEQ:HEX`, as printed by an
        /// earlier run): fails when the chain was cut back or rewritten since.
        #[arg(long)]
        expect: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key and print it once. Only its SHA-256 is stored.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// What the key is for.
        #[arg(long, default_value = "")]
        description: String,
        /// `client` (exports) or `admin` (also the dashboard).
        #[arg(long, default_value = "client")]
        role: String,
        /// An account the key may export and read (repeatable). A client key needs either
        /// this or `--all-accounts`.
        #[arg(long = "account", conflicts_with = "all_accounts")]
        accounts: Vec<String>,
        /// The key may export and read every account (admin keys always do).
        #[arg(long)]
        all_accounts: bool,
    },
    /// List keys (prefix only, never the secret).
    List,
    /// Revoke a key by id or prefix, for good (the dashboard cannot reactivate it).
    Revoke { id_or_prefix: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", api::openapi_yaml());
        return Ok(());
    }
    shared::logging::init()?;
    let config = Config::from_env()?;
    let command = cli.command.unwrap_or(Command::Serve);
    // Every setting is checked before anything connects: a typo fails at once, naming it.
    let api_config = matches!(command, Command::Serve).then(ApiConfig::from_env).transpose()?;
    db::migrate(config.session_database_url()).await.context("applying migrations")?;
    match command {
        Command::Serve => serve(config, api_config.expect("read for serve")).await,
        Command::Keys { action } => keys(config, action).await,
        Command::Audit { action: AuditAction::Verify { expect } } => verify_audit(config, expect).await,
        Command::Openapi => unreachable!("handled above"),
    }
}

async fn serve(config: Config, api_config: ApiConfig) -> anyhow::Result<()> {
    let state = api::AppState::from_config(&config, &api_config)?;
    let batches = state.clone();
    tracing::info!(bind = %api_config.bind, url = %api_config.public_base_url, "API listening");
    let listener = tokio::net::TcpListener::bind(api_config.bind)
        .await
        .with_context(|| format!("binding API_BIND={}", api_config.bind))?;
    let served = api::serve::serve(
        listener,
        api::app(state),
        api_config.transport,
        shared::shutdown::signal(),
        std::time::Duration::from_secs(10),
    )
    .await
    .context("serving HTTP");
    // The last few seconds of reuse counts and repeat requests, not flushed in the background yet.
    batches.flush_batches().await;
    served
}

async fn keys(config: Config, action: KeyAction) -> anyhow::Result<()> {
    let pool = db::service_pool(&config, 1)?;
    let db = pool.get().await.context("connecting to Postgres")?;
    match action {
        KeyAction::Create { name, description, role, accounts, all_accounts } => {
            let role = Role::parse(&role).context("--role must be `client` or `admin`")?;
            let spec =
                KeySpec { name: &name, description: &description, role, accounts: &accounts, all_accounts };
            if let Err(e) = spec.validate() {
                anyhow::bail!("{e} (--account ACCOUNT, repeatable, or --all-accounts)");
            }
            let mut db = db;
            let tx = db.transaction().await?;
            let (key, new) = api_keys::create(&tx, &spec).await?;
            let event = Event::new(
                Actor::command_line("statement-api keys create"),
                "api_key.create",
                Some(format!("api_key:{}", key.id)),
                Outcome::Success,
            )
            .with_details(key.created_details());
            audit::record(&tx, &[event]).await?;
            tx.commit().await?;
            eprintln!(
                "Created {} key {:?} ({}). It is shown once; store it now:",
                key.role.as_str(),
                key.name,
                key.id
            );
            println!("{}", new.plaintext);
        }
        KeyAction::List => {
            println!(
                "{:<36}  {:<11}  {:<6}  {:<11}  {:<20}  NAME",
                "ID", "PREFIX", "ROLE", "STATE", "LAST USED"
            );
            for key in api_keys::list(&db).await? {
                let state = key.state().as_str();
                let last = key.last_used_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
                println!(
                    "{:<36}  {:<11}  {:<6}  {:<11}  {:<20}  {}",
                    key.id,
                    key.prefix,
                    key.role.as_str(),
                    state,
                    last.chars().take(20).collect::<String>(),
                    key.name
                );
            }
        }
        KeyAction::Revoke { id_or_prefix } => {
            let mut db = db;
            let tx = db.transaction().await?;
            let revoked = api_keys::revoke(&tx, &id_or_prefix).await?;
            if revoked.is_empty() {
                anyhow::bail!("no key matches {id_or_prefix:?} (or it is already revoked)");
            }
            let events: Vec<Event> = revoked
                .iter()
                .map(|id| {
                    Event::new(
                        Actor::command_line("statement-api keys revoke"),
                        "api_key.revoke",
                        Some(format!("api_key:{id}")),
                        Outcome::Success,
                    )
                })
                .collect();
            audit::record(&tx, &events).await?;
            tx.commit().await?;
            println!("revoked {} key(s)", revoked.len());
        }
    }
    Ok(())
}

async fn verify_audit(config: Config, expect: Option<String>) -> anyhow::Result<()> {
    let expect = expect
        .map(|e| {
            let (seq, hash) = e.split_once(':').context("--expect must be SEQ:HEX")?;
            Ok::<_, anyhow::Error>((
                seq.parse::<i64>().context("--expect: SEQ")?,
                hex::decode(hash).context("--expect: HEX")?,
            ))
        })
        .transpose()?;
    let pool = db::service_pool(&config, 1)?;
    let db = pool.get().await.context("connecting to Postgres")?;
    match audit::verify(&db).await? {
        Verdict::Broken { seq, reason } => anyhow::bail!("audit chain broken at row {seq}: {reason}"),
        Verdict::Intact { rows, head } => {
            if let Some((seq, hash)) = &expect {
                let held = audit::hash_of(&db, *seq).await?;
                if held.as_ref() != Some(hash) {
                    anyhow::bail!(
                        "audit chain does not hold row {seq} with the expected hash: it was cut back or rewritten"
                    );
                }
            }
            match head {
                Some((seq, hash)) => {
                    println!("audit chain intact: {rows} rows; head {seq}:{}", hex::encode(hash))
                }
                None => println!("audit chain intact: no rows yet"),
            }
            Ok(())
        }
    }
}
