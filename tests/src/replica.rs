//! Private MariaDB servers: a primary (binary log on) and its replica, for replication tests,
//! or one server with settings of its own. Debian's `mariadbd` and `mariadb-install-db`, data
//! directories and sockets under a temporary directory, free loopback ports, servers killed
//! when dropped.
//!
//! The system tables are installed once per machine into a cached template data directory
//! (`mariadb-install-db` takes a few seconds); each pair copies it, so a pair is up in about a
//! second or two.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use mysql_async::prelude::Queryable;

/// One `mariadbd` process.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// A primary and a replica replicating from it (GTID, `slave_pos`). Dropped, it kills both
/// servers, then removes their directory (fields drop in this order).
pub struct ReplicaPair {
    primary: Server,
    replica: Server,
    _dir: DirGuard,
}

/// One private MariaDB server with settings of its own (a default isolation level, say).
/// Dropped, it kills the server and removes its directory.
pub struct PrivateMariaDb {
    server: Server,
    _dir: DirGuard,
}

impl PrivateMariaDb {
    /// Starts a server with `extra` options; returns once it answers.
    pub async fn start(extra: &[&str]) -> Self {
        let (template, dir, guard) = private_dir("private").await;
        let started = Self { server: Server::start(&template, &dir, "server", extra), _dir: guard };
        started.server.wait_ready().await;
        started
    }

    /// `root` (no password), for `TestApp::spawn_with_source`.
    pub fn admin_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.server.port)
    }

    /// `host:port` of the server.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    pub async fn exec(&self, sql: &str) {
        self.server.exec(sql).await;
    }

    pub async fn query_first<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        self.server.query_first(sql).await
    }
}

/// The system-tables template and a fresh directory for servers, removed when the guard drops
/// (from then on, a panic drops what started: servers killed, directory removed).
async fn private_dir(kind: &str) -> (PathBuf, PathBuf, DirGuard) {
    let template = tokio::task::spawn_blocking(template).await.unwrap();
    let dir = std::env::temp_dir().join(format!("stmt-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let guard = DirGuard(dir.clone());
    (template, dir, guard)
}

impl ReplicaPair {
    /// Starts both servers and replication; returns once the replica is running.
    pub async fn start() -> Self {
        let (template, dir, guard) = private_dir("replica").await;
        let primary = Server::start(&template, &dir, "primary", &["--server-id=1", "--log-bin=binlog"]);
        let replica = Server::start(&template, &dir, "replica", &["--server-id=2", "--relay-log=relay"]);
        let started = Self { primary, replica, _dir: guard };
        started.primary.wait_ready().await;
        started.replica.wait_ready().await;
        started
            .primary_exec(
                "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl';
                 GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
            )
            .await;
        started
            .replica_exec(&format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'repl',
                     MASTER_PASSWORD = 'repl', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
                 START SLAVE",
                started.primary.port
            ))
            .await;
        started.wait_caught_up().await;
        started
    }

    /// `root` on the primary (no password), for `TestApp::spawn_with_source`.
    pub fn primary_admin_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.primary.port)
    }

    /// `host:port` of the replica.
    pub fn replica_host_port(&self) -> String {
        format!("127.0.0.1:{}", self.replica.port)
    }

    pub async fn primary_exec(&self, sql: &str) {
        self.primary.exec(sql).await;
    }

    pub async fn replica_exec(&self, sql: &str) {
        self.replica.exec(sql).await;
    }

    /// The primary's binary log position (its executed GTID set).
    pub async fn primary_position(&self) -> String {
        self.primary.query_first("SELECT @@gtid_binlog_pos").await
    }

    /// The replica's `Seconds_Behind_Master` (`None`: NULL, replication stopped).
    pub async fn replica_lag(&self) -> Option<u64> {
        let mut conn = self.replica.conn().await;
        let row: mysql_async::Row =
            conn.query_first("SHOW REPLICA STATUS").await.unwrap().expect("a replica");
        row.get_opt::<Option<u64>, _>("Seconds_Behind_Master").expect("the column").unwrap()
    }

    /// Waits until the replica has applied everything the primary has written (at most 30 s).
    pub async fn wait_caught_up(&self) {
        let position = self.primary_position().await;
        let waited: i64 =
            self.replica.query_first(&format!("SELECT MASTER_GTID_WAIT('{position}', 30)")).await;
        assert_eq!(waited, 0, "the replica did not reach {position} within 30 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes its directory when dropped.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    fn start(template: &Path, dir: &Path, name: &str, extra: &[&str]) -> Self {
        let datadir = dir.join(name);
        copy_dir(template, &datadir);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("{name}.err"));
        let mut command = Command::new(binary("mariadbd"));
        command
            .arg("--no-defaults")
            .args(as_root())
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", dir.join(format!("{name}.sock")).display()))
            .arg(format!("--pid-file={}", dir.join(format!("{name}.pid")).display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(SMALL_SERVER)
            .args(extra)
            .current_dir(&datadir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("mariadbd starts (Debian package mariadb-server)");
        Self { child, port, log }
    }

    async fn wait_ready(&self) {
        let url = format!("mysql://root@127.0.0.1:{}", self.port);
        for _ in 0..400 {
            if let Ok(conn) = mysql_async::Conn::from_url(url.as_str()).await {
                let _ = conn.disconnect().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("mariadbd on port {} did not start within 20 s:\n{log}", self.port);
    }

    async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{}", self.port).as_str()).await.unwrap()
    }

    async fn exec(&self, sql: &str) {
        let mut conn = self.conn().await;
        conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
    }

    async fn query_first<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        let mut conn = self.conn().await;
        let value: Option<T> = conn.query_first(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
        value.expect("a row")
    }
}

/// Small and quick: these servers hold a few rows.
const SMALL_SERVER: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-flush-log-at-trx-commit=2",
    "--performance-schema=OFF",
    "--skip-innodb-doublewrite",
];

/// `--user=root` when running as root (mariadbd refuses root otherwise).
fn as_root() -> Vec<&'static str> {
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if root { vec!["--user=root"] } else { vec![] }
}

fn binary(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} not found: install Debian's mariadb-server");
}

/// The installed system tables, made once per machine and MariaDB version and cached under
/// the temporary directory (made under a private name, then renamed into place: never seen
/// half-made).
fn template() -> PathBuf {
    let version = Command::new(binary("mariadbd")).arg("--version").output().expect("mariadbd --version");
    let version = String::from_utf8_lossy(&version.stdout);
    let tag = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let template = std::env::temp_dir().join(format!("stmt-mariadb-template-{tag}"));
    if template.join("mysql").is_dir() {
        return template;
    }
    let making =
        std::env::temp_dir().join(format!("stmt-mariadb-template-{}", uuid::Uuid::new_v4().simple()));
    let output = Command::new(binary("mariadb-install-db"))
        .arg("--no-defaults")
        .args(as_root())
        .arg(format!("--datadir={}", making.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
        .args(SMALL_SERVER)
        .output()
        .expect("mariadb-install-db runs (Debian package mariadb-server)");
    assert!(
        output.status.success(),
        "mariadb-install-db failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if std::fs::rename(&making, &template).is_err() {
        // Another test process made it first.
        let _ = std::fs::remove_dir_all(&making);
    }
    template
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
