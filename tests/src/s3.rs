//! Real S3-compatible servers for the tests, installed by `scripts/s3-test-server.sh`: moto
//! (records what it is sent, checks no signature) and s3s-fs (checks every SigV4 signature and
//! the expiry of pre-signed URLs); and a TCP proxy in front of either that a test can cut, to take
//! storage away mid-upload.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use secrecy::SecretString;
use shared::config::{S3Config, S3Encryption, S3StaticCredentials};
use tokio::{net::TcpListener, task::JoinHandle};

pub const BUCKET: &str = "statement-exports";

/// A moto server on a loopback port, stopped when dropped.
pub struct MotoServer {
    child: Child,
    pub addr: SocketAddr,
}

impl MotoServer {
    pub async fn start() -> Self {
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/venv/bin/moto_server");
        assert!(
            binary.exists(),
            "{} is missing: run `bash scripts/s3-test-server.sh` (make test does)",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Owned at once, so every path below (a panic included) stops the process on drop.
        let server = Self { child, addr };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                server.create_bucket().await;
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not start on {addr}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn create_bucket(&self) {
        let response =
            reqwest::Client::new().put(format!("{}/{BUCKET}", self.endpoint())).send().await.unwrap();
        assert!(response.status().is_success(), "create bucket: {}", response.status());
    }

    /// Deletes an object behind the service's back, as an operator or a lifecycle rule would.
    /// (moto refuses an anonymous DELETE; any credentials will do, it does not check them.)
    pub async fn delete_object(&self, key: &str) {
        let authorization = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, \
                             SignedHeaders=host, Signature=0";
        let response = reqwest::Client::new()
            .delete(format!("{}/{BUCKET}/{key}", self.endpoint()))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "delete {key}: {}", response.status());
    }

    /// Keys of the completed objects under `prefix` (in-progress multipart uploads are not
    /// objects and are not listed).
    pub async fn list_keys(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.endpoint());
        let body = reqwest::Client::new().get(url).send().await.unwrap().text().await.unwrap();
        body.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect()
    }
}

impl MotoServer {
    /// Ids of the multipart uploads started under `prefix` and neither completed nor aborted.
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/{BUCKET}?uploads&prefix={prefix}", self.endpoint());
        let body = reqwest::Client::new().get(url).send().await.unwrap().text().await.unwrap();
        body.split("<UploadId>")
            .skip(1)
            .filter_map(|s| s.split("</UploadId>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An s3s-fs server on a loopback port, over a fresh directory, with one bucket
/// ([`S3sServer::BUCKET`]) and one set of credentials ([`S3sServer::ACCESS_KEY_ID`],
/// [`S3sServer::SECRET_ACCESS_KEY`]). Stopped (and its directory removed) when dropped.
pub struct S3sServer {
    child: Child,
    pub addr: SocketAddr,
    /// Where it keeps its buckets: `<root>/<bucket>/<key>` holds an object's bytes.
    pub root: PathBuf,
}

impl S3sServer {
    /// Short: s3s-fs keeps an upload's metadata in a file named after the base64 of the bucket
    /// and the key, and a file name has at most 255 bytes. With this bucket, keys of up to about
    /// 130 bytes fit (an export's key is about 120 with a short account id); with
    /// `statement-exports`, an export's key is 500 Internal Server Error ("File name too long").
    pub const BUCKET: &str = "s3s";
    pub const ACCESS_KEY_ID: &str = "AKIAS3SFSTEST";
    pub const SECRET_ACCESS_KEY: &str = "s3s-fs-test-secret-access-key";

    pub async fn start() -> Self {
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/s3s-fs/bin/s3s-fs");
        assert!(
            binary.exists(),
            "{} is missing: run `bash scripts/s3-test-server.sh` (make test does)",
            binary.display()
        );
        let root = std::env::temp_dir().join(format!("s3s-fs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(root.join(Self::BUCKET)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY_ID, "--secret-key", Self::SECRET_ACCESS_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let server = Self { child, addr, root };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("s3s-fs did not start on {addr}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service's settings for this server (its credentials as `S3_*` settings).
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: Self::BUCKET.into(),
            credentials: Some(S3StaticCredentials {
                access_key_id: Self::ACCESS_KEY_ID.into(),
                secret_access_key: SecretString::from(Self::SECRET_ACCESS_KEY.to_owned()),
            }),
            ..s3_config(self.endpoint())
        }
    }

    /// The bytes the server stored for `key`, read from its directory (not through S3).
    pub fn stored(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.root.join(Self::BUCKET).join(key)).unwrap()
    }

    /// The keys of the objects under `prefix`, from its directory.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.root.join(Self::BUCKET);
        crate::files_under(&bucket.join(prefix))
            .into_iter()
            .map(|path| path.strip_prefix(&bucket).unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// S3 settings for the service, through `endpoint`, with quick retries.
pub fn s3_config(endpoint: String) -> S3Config {
    S3Config {
        bucket: BUCKET.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        public_endpoint: None,
        path_style: true,
        credentials: Some(S3StaticCredentials {
            access_key_id: "test".into(),
            secret_access_key: SecretString::from("test".to_owned()),
        }),
        encryption: S3Encryption::BucketDefault,
        checksum: true,
        retry_timeout: Duration::from_secs(2),
    }
}

/// The environment variables that configure `s3` (`STORAGE_BACKEND=s3` and the `S3_*`
/// settings), for a binary started by a test. Unset settings are left out.
pub fn settings(s3: &S3Config) -> Vec<(&'static str, String)> {
    use secrecy::ExposeSecret;
    let mut env = vec![
        ("STORAGE_BACKEND", "s3".to_owned()),
        ("S3_BUCKET", s3.bucket.clone()),
        ("S3_PATH_STYLE", s3.path_style.to_string()),
        ("S3_CHECKSUM", if s3.checksum { "sha256" } else { "none" }.to_owned()),
        ("S3_RETRY_TIMEOUT_SECS", s3.retry_timeout.as_secs_f64().to_string()),
    ];
    let optional = [
        ("S3_REGION", s3.region.clone()),
        ("S3_ENDPOINT", s3.endpoint.clone()),
        ("S3_PUBLIC_ENDPOINT", s3.public_endpoint.clone()),
        ("S3_ACCESS_KEY_ID", s3.credentials.as_ref().map(|c| c.access_key_id.clone())),
        (
            "S3_SECRET_ACCESS_KEY",
            s3.credentials.as_ref().map(|c| c.secret_access_key.expose_secret().to_owned()),
        ),
    ];
    env.extend(optional.into_iter().filter_map(|(name, value)| Some((name, value?))));
    match &s3.encryption {
        S3Encryption::BucketDefault => {}
        S3Encryption::Aes256 => env.push(("S3_SSE", "AES256".into())),
        S3Encryption::Kms { key_id } => {
            env.push(("S3_SSE", "aws:kms".into()));
            env.extend(key_id.clone().map(|id| ("S3_SSE_KMS_KEY_ID", id)));
        }
    }
    env
}

/// Forwards TCP connections to `target` until cut (connections dropped) or frozen (connections
/// held open, nothing passed either way: a silent peer).
pub struct ChaosProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Connections reset while cut.
    turned_away: Arc<AtomicUsize>,
    frozen: tokio::sync::watch::Sender<bool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let turned_away = Arc::new(AtomicUsize::new(0));
        let frozen = tokio::sync::watch::Sender::new(false);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = tokio::spawn({
            let cut = cut.clone();
            let turned_away = turned_away.clone();
            let connections = connections.clone();
            let frozen = frozen.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    // Checked and registered under the lock `cut` takes: no connection slips
                    // through a cut.
                    let mut open = connections.lock().unwrap();
                    if cut.load(Ordering::SeqCst) {
                        // Reset (RST, not an orderly close): what a client sees of a storage
                        // host that is down, and an error object_store retries.
                        let _ = inbound.set_zero_linger();
                        turned_away.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let frozen = frozen.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = tokio::net::TcpStream::connect(target).await {
                            let (from_client, to_client) = inbound.into_split();
                            let (from_server, to_server) = outbound.into_split();
                            tokio::join!(
                                pump(from_client, to_server, frozen.subscribe()),
                                pump(from_server, to_client, frozen.subscribe())
                            );
                        }
                    });
                    open.push(task);
                }
            }
        });
        Self { addr, cut, turned_away, frozen, connections, acceptor }
    }

    /// The peer goes silent: every connection stays open and passes nothing until [`thaw`].
    ///
    /// [`thaw`]: ChaosProxy::thaw
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Storage goes away: open connections are dropped, new ones are reset.
    pub fn cut(&self) {
        let mut open = self.connections.lock().unwrap();
        self.cut.store(true, Ordering::SeqCst);
        for task in open.drain(..) {
            task.abort();
        }
    }

    /// Connections reset since [`ChaosProxy::start`] because storage was cut: a client is
    /// retrying into the outage when this grows.
    pub fn turned_away(&self) -> usize {
        self.turned_away.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction of a connection, passing nothing while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A stand-in for the AWS credential endpoints, on a loopback port: the EC2 instance metadata
/// service as IMDSv2 answers (`AWS_METADATA_ENDPOINT`: a session token, the role's name, its
/// credentials) and the ECS / EKS Pod Identity container endpoint
/// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, `/v1/credentials`, with the authorization token).
/// Both hand out the same temporary credentials, valid for an hour, with `session_token`.
pub struct CredentialEndpoint {
    pub addr: SocketAddr,
    /// Credentials handed out so far.
    served: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl CredentialEndpoint {
    /// What the container endpoint expects in `Authorization` (the content of
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
    pub const AUTHORIZATION: &str = "pod-identity-authorization-token";
    const IMDS_TOKEN: &str = "imds-session-token";
    const ROLE: &str = "statement-export";

    pub async fn start(access_key_id: &str, secret_access_key: &str, session_token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let expiration = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let expiration = expiration.format(&time::format_description::well_known::Rfc3339).unwrap();
        let credentials = serde_json::json!({
            "AccessKeyId": access_key_id,
            "SecretAccessKey": secret_access_key,
            "Token": session_token,
            "Expiration": expiration,
        })
        .to_string();
        let acceptor = tokio::spawn({
            let served = served.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (served, credentials) = (served.clone(), credentials.clone());
                    tokio::spawn(async move { answer(stream, &credentials, &served).await });
                }
            }
        });
        Self { addr, served, acceptor }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Answers one request (`Connection: close`).
async fn answer(mut stream: tokio::net::TcpStream, credentials: &str, served: &AtomicUsize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let imds = header("x-aws-ec2-metadata-token").as_deref() == Some(CredentialEndpoint::IMDS_TOKEN);
    let role_path = format!("/latest/meta-data/iam/security-credentials/{}", CredentialEndpoint::ROLE);
    let (status, body) = match request_line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["PUT", "/latest/api/token"] => ("200 OK", CredentialEndpoint::IMDS_TOKEN.to_owned()),
        ["GET", "/latest/meta-data/iam/security-credentials/"] if imds => {
            ("200 OK", CredentialEndpoint::ROLE.to_owned())
        }
        ["GET", path] if imds && path == role_path => {
            served.fetch_add(1, Ordering::SeqCst);
            ("200 OK", credentials.to_owned())
        }
        ["GET", "/v1/credentials"]
            if header("authorization").as_deref() == Some(CredentialEndpoint::AUTHORIZATION) =>
        {
            served.fetch_add(1, Ordering::SeqCst);
            ("200 OK", credentials.to_owned())
        }
        _ => ("401 Unauthorized", String::new()),
    };
    let response =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl Drop for CredentialEndpoint {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}
