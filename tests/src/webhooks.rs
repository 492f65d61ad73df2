//! A webhook receiver in the test process: a small HTTP/1.1 server on a loopback port that
//! records every request (headers, body, arrival time) and answers as the test tells it to;
//! and the check of a delivery's signature by the `standardwebhooks` package from PyPI (an
//! implementation we did not write), through `tests/python/verify_webhook.py`.
//!
//! Every answer closes its connection, so stopping the receiver refuses the next attempt at
//! once (no pooled connection outlives it).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinSet,
};

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This status, a short body.
    Status(u16),
    /// A redirect (`302`) to this URL.
    Redirect(String),
    /// `200` with a body of this many bytes.
    Big(usize),
    /// `200` with exactly these bytes as its body.
    Bytes(&'static [u8]),
    /// `200` declaring a body of `declared` bytes, sending `sent` of them, then nothing more
    /// (the connection stays open).
    Stall { declared: usize, sent: usize },
    /// Nothing at all: the request is read and never answered.
    Hang,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// When its last byte arrived (this host's clock).
    pub at: SystemTime,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    answer: Mutex<Option<Answer>>,
    arrived: Notify,
}

/// The receiver (see the module's doc). Dropping it stops it.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts answering `200` on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (the address of a receiver stopped before, say).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("the receiver binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self { addr, shared, server: Some(server) }
    }

    /// Its URL for `path` (`http://127.0.0.1:<port><path>`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every request from now on with `answer`.
    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = Some(answer);
    }

    /// What has arrived so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until `n` requests have arrived; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{} of {n} webhook requests arrived within {within:?}", self.received().len());
            }
        }
    }

    /// Stops listening and drops every connection: the next attempt is refused.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until aborted (which aborts every connection's task with it).
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(connection(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(received) = read_request(&mut stream).await else { return };
    shared.received.lock().unwrap().push(received);
    shared.arrived.notify_waiters();
    let answer = shared.answer.lock().unwrap().clone().unwrap_or(Answer::Status(200));
    let head = |status: u16, extra: &str, length: usize| {
        format!("HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {length}\r\n{extra}\r\n")
    };
    let _ = match answer {
        Answer::Status(status) => {
            let body = format!("answered {status}");
            stream.write_all(format!("{}{body}", head(status, "", body.len())).as_bytes()).await
        }
        Answer::Redirect(to) => {
            stream.write_all(head(302, &format!("location: {to}\r\n"), 0).as_bytes()).await
        }
        Answer::Big(bytes) => {
            if stream.write_all(head(200, "", bytes).as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
            Ok(())
        }
        Answer::Bytes(body) => {
            if stream.write_all(head(200, "", body.len()).as_bytes()).await.is_err() {
                return;
            }
            stream.write_all(body).await
        }
        Answer::Stall { declared, sent } => {
            let _ = stream.write_all(head(200, "", declared).as_bytes()).await;
            let _ = stream.write_all(&vec![b'x'; sent]).await;
            std::future::pending::<()>().await;
            Ok(())
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            Ok(())
        }
    };
    let _ = stream.shutdown().await;
}

/// One request: its head, then `content-length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (request_line.next()?.to_owned(), request_line.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received { method, path, headers, body, at: SystemTime::now() })
}

/// Verifies deliveries with the `standardwebhooks` package (PyPI) under `secret` (`whsec_…`):
/// `Ok` with each body's parsed JSON, or the verifier's complaint.
pub fn verify_with_standardwebhooks(
    secret: &str,
    deliveries: &[Received],
) -> Result<Vec<serde_json::Value>, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.local/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/webhook-verifier.sh", python.display());
    let input: Vec<serde_json::Value> = deliveries
        .iter()
        .map(|d| serde_json::json!({ "headers": d.headers, "body": String::from_utf8_lossy(&d.body) }))
        .collect();
    let mut child = std::process::Command::new(python)
        .arg(root.join("python/verify_webhook.py"))
        .arg(secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the verifier runs");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &serde_json::to_vec(&input).unwrap()).expect("the verifier reads");
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(serde_json::from_str(&stdout).expect("the verifier prints the verified bodies as JSON"))
}
