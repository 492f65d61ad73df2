//! A private PgBouncer in transaction-pooling mode in front of the tests' Postgres
//! (`scripts/pgbouncer.sh`, which installs Debian's `pgbouncer` when it is missing).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running PgBouncer, stopped when dropped.
pub struct PgBouncer {
    /// Where it listens (127.0.0.1).
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    /// Starts one on a free port in front of the Postgres at `PG_ADMIN_URL`, and waits until it
    /// accepts connections.
    pub fn start() -> Self {
        let admin = crate::pg_admin_url();
        let host_port = admin.rsplit_once('@').unwrap().1.split('/').next().unwrap().to_owned();
        let (pg_host, pg_port) = host_port.rsplit_once(':').unwrap_or((&host_port, "5432"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("stmt-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pgbouncer.sh");
        let child = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .arg(port.to_string())
            .args([pg_host, pg_port])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash runs scripts/pgbouncer.sh");
        let bouncer = Self { port, child, dir };
        // The first run may install the package.
        for _ in 0..2400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PgBouncer did not listen on {port} (see {})", bouncer.dir.display());
    }

    /// `url` (a `postgres://` URL of the tests' Postgres) through this PgBouncer.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').unwrap();
        let path = rest.split_once('/').map_or("", |(_, path)| path);
        format!("{scheme_user}@127.0.0.1:{}/{path}", self.port)
    }

    /// Runs a command of PgBouncer's admin console (`SHOW POOLS`, `SHOW STATS`) and returns its
    /// rows, each column by name.
    pub async fn show(&self, command: &str) -> Vec<std::collections::HashMap<String, String>> {
        let url = format!("postgres://postgres@127.0.0.1:{}/pgbouncer", self.port);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .simple_query(command)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_owned(), row.get(i).unwrap_or_default().to_owned()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
