use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::{
    api_keys::{self, KeySpec, Role},
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
        /// Restrict the key to these accounts (repeatable); default: every account.
        #[arg(long = "account")]
        accounts: Vec<String>,
    },
    /// List keys (prefix only, never the secret).
    List,
    /// Revoke a key by id or prefix.
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
    db::migrate(&config.database_url).await.context("applying migrations")?;
    match command {
        Command::Serve => serve(config, api_config.expect("read for serve")).await,
        Command::Keys { action } => keys(config, action).await,
        Command::Openapi => unreachable!("handled above"),
    }
}

async fn serve(config: Config, api_config: ApiConfig) -> anyhow::Result<()> {
    let state = api::AppState::from_config(&config, &api_config)?;
    let (reuse, pool) = (state.reuse.clone(), state.pool.clone());
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
    // The last few seconds of reuse counts, which the background flush has not written yet.
    reuse.flush(&pool).await;
    served
}

async fn keys(config: Config, action: KeyAction) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 1)?;
    let db = pool.get().await.context("connecting to Postgres")?;
    match action {
        KeyAction::Create { name, description, role, accounts } => {
            let role = Role::parse(&role).context("--role must be `client` or `admin`")?;
            let accounts = (!accounts.is_empty()).then_some(accounts);
            let spec = KeySpec {
                name: &name,
                description: &description,
                role,
                allowed_accounts: accounts.as_deref(),
            };
            spec.validate()?;
            let (key, new) = api_keys::create(&db, &spec).await?;
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
                "{:<36}  {:<11}  {:<6}  {:<8}  {:<20}  NAME",
                "ID", "PREFIX", "ROLE", "STATE", "LAST USED"
            );
            for key in api_keys::list(&db).await? {
                let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                let last = key.last_used_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
                println!(
                    "{:<36}  {:<11}  {:<6}  {:<8}  {:<20}  {}",
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
            let n = api_keys::revoke(&db, &id_or_prefix).await?;
            if n == 0 {
                anyhow::bail!("no active key matches {id_or_prefix:?}");
            }
            println!("revoked {n} key(s)");
        }
    }
    Ok(())
}
