//! Helpers for the benchmark commands: a fresh Postgres database, pgbench runs, what the
//! export benchmarks share ([`exports`]), and the `name: value` output the Makefile targets
//! promise.

pub mod exports;

use std::process::Command;

use anyhow::{Context as _, bail};
use secrecy::SecretString;

/// The Postgres administrator URL (`PG_ADMIN_URL`, default postgres on 127.0.0.1:5432).
pub fn pg_admin_url() -> String {
    std::env::var("PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops and recreates database `name`, migrates it, and returns its URL.
pub async fn fresh_database(name: &str) -> anyhow::Result<String> {
    let (admin, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .context("Postgres at PG_ADMIN_URL (run scripts/services.sh)")?;
    tokio::spawn(conn);
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    let url = format!("{}/{name}", pg_admin_url().rsplit_once('/').context("URL has a path")?.0);
    shared::db::migrate(&SecretString::from(url.clone())).await?;
    Ok(url)
}

/// Prints one figure.
pub fn figure(name: &str, value: f64) {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        println!("{name}: {value:.0}");
    } else {
        println!("{name}: {value:.3}");
    }
}

/// `url` with the session settings the service's own pool uses, for pgbench.
pub fn with_service_session(url: &str) -> String {
    let encoded = shared::db::SESSION_OPTIONS.replace(' ', "%20").replace('=', "%3D");
    format!("{url}?options={encoded}")
}

/// Runs pgbench with `script` and returns its transactions per second (excluding connection
/// set-up).
pub fn pgbench_tps(
    url: &str,
    script: &str,
    clients: usize,
    transactions_per_client: usize,
    extra: &[&str],
) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("stmt-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("script.sql");
    std::fs::write(&file, script)?;
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-t", &transactions_per_client.to_string(), "-f"])
        .arg(&file)
        .args(extra)
        .arg(url)
        .output()
        .context("running pgbench (Debian package postgresql-contrib / postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .with_context(|| format!("no tps line in pgbench output: {stdout}"))
}

/// Replaces `$n` placeholders (highest first, so `$10` is not read as `$1`) for pgbench.
pub fn pgbench_sql(sql: &str, replacements: &[&str]) -> String {
    let mut out = sql.to_owned();
    for (i, value) in replacements.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), value);
    }
    // pgbench wants each statement on one line.
    let mut flat: String = out
        .lines()
        .map(|l| l.split("--").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    flat.push('\n');
    flat
}

/// Percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
