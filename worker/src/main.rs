use anyhow::Context as _;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use poem::listener::Listener as _;
use shared::config::{Config, WorkerConfig};
use worker::runner::Runner;

/// Statement export worker: claims export jobs from Postgres, streams rows from the source
/// database to CSV in object storage.
///
/// Configuration comes from environment variables (see .env.example).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Run the jobs that are ready now, then exit (instead of running until SIGTERM).
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::logging::init()?;
    let config = Config::from_env()?;
    let worker_config = WorkerConfig::from_env()?;
    shared::db::migrate(config.session_database_url()).await.context("applying migrations")?;
    let ctx = worker::context(&config, &worker_config)?;
    // Exportable tables (and, with SOURCE_MAX_LAG_SECS, the replication-status privilege) are
    // checked at start-up: a mismatch is a configuration error.
    worker::check_source(&ctx).await?;
    ctx.holds.arm_from_env()?;
    let metrics = ctx.metrics.clone();
    let metrics_bind = worker_config.metrics_bind;
    let runner = Runner::new(ctx, worker_config, config.session_database_url().clone());
    if cli.once {
        let done = runner.run_pending().await?;
        tracing::info!(jobs = done, "ran the ready jobs");
        return Ok(());
    }
    let listener = poem::listener::TcpListener::bind(metrics_bind)
        .into_acceptor()
        .await
        .with_context(|| format!("WORKER_METRICS_BIND: cannot listen on {metrics_bind}"))?;
    tracing::info!(bind = %metrics_bind, "serving /metrics");
    tokio::spawn(poem::Server::new_with_acceptor(listener).run(worker::metrics_endpoint(metrics)));
    runner.run(shared::shutdown::signal()).await;
    Ok(())
}
