//! TLS for tests: a CA and server certificates made at test time with the `openssl` CLI, and a
//! private Postgres (Debian's binaries under `/usr/lib/postgresql/15/bin`) with TLS on or off.
//! A private MariaDB with TLS is [`crate::replica::PrivateMariaDb`] started with
//! [`Certs::mariadb_args`].

use std::{
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh CA and two server certificates it signed: one for `localhost` and `127.0.0.1`
/// (where the test servers listen), one for another host only (`db.example.internal`).
pub struct Certs {
    pub ca: PathBuf,
    /// For `localhost` / `127.0.0.1`.
    pub server: (PathBuf, PathBuf),
    /// For `db.example.internal` only.
    pub other_host: (PathBuf, PathBuf),
    dir: TempDir,
}

impl Certs {
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("stmt-certs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let d = &dir.0;
        self_signed(d, "ca", "statement test CA");
        let server = issue(d, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        let other_host = issue(d, "other", "subjectAltName=DNS:db.example.internal");
        Self { ca: d.join("ca.pem"), server, other_host, dir }
    }

    /// Another CA's certificate (that signed none of these).
    pub fn unrelated_ca(&self) -> PathBuf {
        self_signed(&self.dir.0, "unrelated", "unrelated CA");
        self.dir.0.join("unrelated.pem")
    }

    /// A client certificate (cert, key) for the database user `user` (its CN).
    pub fn client(&self, user: &str) -> (PathBuf, PathBuf) {
        issue(&self.dir.0, user, "extendedKeyUsage=clientAuth")
    }

    /// `key` converted to PKCS#1 (`BEGIN RSA PRIVATE KEY`), the form mysql_async reads.
    pub fn pkcs1(&self, key: &Path) -> PathBuf {
        let out = key.with_extension("rsa");
        openssl(
            &self.dir.0,
            &["rsa", "-in", key.to_str().unwrap(), "-traditional", "-out", out.to_str().unwrap()],
        );
        out
    }

    /// `mariadbd` options serving `pair` (cert, key) with TLS.
    pub fn mariadb_args(&self, pair: &(PathBuf, PathBuf)) -> Vec<String> {
        vec![
            format!("--ssl-ca={}", self.ca.display()),
            format!("--ssl-cert={}", pair.0.display()),
            format!("--ssl-key={}", pair.1.display()),
        ]
    }
}

/// A CA: `{stem}.key` and the self-signed `{stem}.pem`.
fn self_signed(dir: &Path, stem: &str, subject: &str) {
    let (key, cert, subject) = (format!("{stem}.key"), format!("{stem}.pem"), format!("/CN={subject}"));
    let args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject];
    openssl(dir, &[&args[..], &["-keyout", &key, "-out", &cert]].concat());
}

/// A key and a certificate signed by the CA, with the given extension; `name` is its CN.
fn issue(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert, ext) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    std::fs::write(dir.join(&ext), format!("{san}\n")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private Postgres on a free loopback port, killed and removed when dropped. With TLS, the
/// server refuses plain connections to every database but `postgres` (where the test harness
/// creates databases), so a test database is reachable over TLS only.
pub struct PrivatePostgres {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl PrivatePostgres {
    /// `tls`: the server's (certificate, key), or `None` for a server without TLS.
    pub async fn start(tls: Option<&(PathBuf, PathBuf)>) -> Self {
        Self::start_with(tls, None).await
    }

    /// With TLS, and over TLS a client certificate signed by `client_ca` whose CN is the user
    /// (`cert` authentication) instead of trust.
    pub async fn start_requiring_client_certs(tls: &(PathBuf, PathBuf), client_ca: &Path) -> Self {
        Self::start_with(Some(tls), Some(client_ca)).await
    }

    async fn start_with(tls: Option<&(PathBuf, PathBuf)>, client_ca: Option<&Path>) -> Self {
        let dir = std::env::temp_dir().join(format!("stmt-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let guard = TempDir(dir.clone());
        let data = dir.join("data");
        chown_to_postgres(&dir);
        let initdb = pg_command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .expect("initdb runs (Debian package postgresql-15)");
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        let mut hba = String::from("local all all trust\n");
        let mut options = vec!["-c".to_owned(), "fsync=off".to_owned()];
        match tls {
            Some((cert, key)) => {
                let ca = client_ca.map(|ca| (ca, "root.crt"));
                for (from, to) in
                    [(cert.as_path(), "server.crt"), (key.as_path(), "server.key")].into_iter().chain(ca)
                {
                    std::fs::copy(from, data.join(to)).unwrap();
                    std::fs::set_permissions(data.join(to), std::fs::Permissions::from_mode(0o600)).unwrap();
                    chown_to_postgres(&data.join(to));
                }
                options.extend(["-c".into(), "ssl=on".into()]);
                let method = if client_ca.is_some() {
                    options.extend(["-c".into(), "ssl_ca_file=root.crt".into()]);
                    "cert"
                } else {
                    "trust"
                };
                hba.push_str(&format!(
                    "hostnossl postgres all 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 {method}\n"
                ));
            }
            None => hba.push_str("host all all 127.0.0.1/32 trust\n"),
        }
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let port = free_port();
        let child = pg_command("postgres")
            .args(["-D", data.to_str().unwrap(), "-p", &port.to_string(), "-k", dir.to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(&options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        let server = Self { child, port, _dir: guard };
        server.wait_ready().await;
        server
    }

    /// The admin URL, for `TestApp::spawn_on`: plain TCP to the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn wait_ready(&self) {
        for _ in 0..400 {
            if tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("postgres on port {} did not start within 20 s", self.port);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster takes its backends with it.
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A Postgres binary. Postgres refuses to run as root: as root, it runs as the `postgres` user
/// (the process itself, so that killing it kills the server).
fn pg_command(binary: &str) -> Command {
    let mut command = Command::new(format!("{PG_BIN}/{binary}"));
    if running_as_root() {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("a postgres user exists")
        };
        command.uid(id("-u")).gid(id("-g"));
    }
    command
}

fn chown_to_postgres(path: &Path) {
    if running_as_root() {
        let status = Command::new("chown").args(["postgres:postgres"]).arg(path).status().unwrap();
        assert!(status.success(), "chown {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
