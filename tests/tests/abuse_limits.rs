//! One unauthenticated client cannot exhaust the API: request bodies are bounded on every
//! protocol before anything reads them, slow and idle clients are cut off, and connections are
//! capped. Clients are independent of our code where it matters: curl (HTTP/1.1, h2c by prior
//! knowledge and by upgrade), the `h2` crate, and raw TCP sockets for what no client would send.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use shared::config::TransportLimits;
use testkit::TestApp;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// An API with these connection limits (the defaults otherwise).
async fn app_with(limits: TransportLimits) -> TestApp {
    TestApp::spawn_with_api(|api| api.transport = limits).await
}

fn addr(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Uploads `size` bytes to `POST /api/export` with curl, streamed from a pipe (no
/// `Content-Length`: HTTP/1.1 sends it chunked, HTTP/2 as bare DATA frames). Returns the status
/// curl saw and how many bytes curl took from the pipe before it finished.
fn curl_upload(url: &str, protocol: &str, size: usize) -> (String, usize) {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", protocol, "-X", "POST", "-T", "-"])
        .args(["-H", "Authorization: Bearer x", "-H", "Content-Type: application/json", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'A'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            // Rust ignores SIGPIPE: once curl is done, this write fails and the feeding stops.
            if stdin.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let output = child.wait_with_output().unwrap();
    let sent = feeder.join().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), sent)
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// Uploads `size` bytes over HTTP/2 (prior knowledge, the `h2` crate as the client) with neither
/// `Content-Length` nor any other length, as fast as flow control lets it. Returns the status
/// and how many bytes the server had let through when the answer came.
async fn h2_upload(addr: &str, size: usize, content_length: Option<usize>) -> (u16, usize) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = poem::http::Request::post(format!("http://{addr}/api/export"));
    if let Some(length) = content_length {
        request = request.header("content-length", length);
    }
    let request = request
        .header("authorization", "Bearer x")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            let chunk = bytes::Bytes::from(vec![b'A'; 16 * 1024]);
            while sent.load(Ordering::SeqCst) < size {
                stream.reserve_capacity(chunk.len());
                let Some(Ok(n)) = futures::future::poll_fn(|cx| stream.poll_capacity(cx)).await else {
                    break;
                };
                let n = n.min(chunk.len());
                if stream.send_data(chunk.slice(..n), false).is_err() {
                    break;
                }
                sent.fetch_add(n, Ordering::SeqCst);
            }
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(60), response).await.expect("an answer").unwrap();
    let at_answer = sent.load(Ordering::SeqCst);
    sender.abort();
    (response.status().as_u16(), at_answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upload_without_any_length_is_refused_with_413_without_being_read() {
    let app = app_with(TransportLimits::default()).await;
    let before = rss_bytes();
    let (status, sent) = h2_upload(&addr(&app), 200 * 1024 * 1024, None).await;
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(status, 413, "an oversized HTTP/2 body with no content-length is refused");
    // The server stopped reading at the limit: HTTP/2 flow control held the client back.
    assert!(sent < 10 * 1024 * 1024, "the client could send {sent} bytes before the answer");
    assert!(grown < 32 * 1024 * 1024, "this process (the API is in it) grew by {grown} bytes");
}

#[tokio::test]
async fn chunked_and_declared_oversized_bodies_are_refused_with_413_on_every_protocol() {
    let app = app_with(TransportLimits::default()).await;
    let url = format!("{}/api/export", app.base_url);
    // `--http2` asks to upgrade; hyper does not do h2c upgrades, so this is answered over
    // HTTP/1.1 and the body is bounded the same way.
    for protocol in ["--http1.1", "--http2"] {
        let url = url.clone();
        let (status, sent) =
            tokio::task::spawn_blocking(move || curl_upload(&url, protocol, 20 * 1024 * 1024)).await.unwrap();
        assert_eq!(status, "413", "chunked over {protocol}");
        assert!(sent < 10 * 1024 * 1024, "{protocol}: curl could send {sent} bytes of a refused upload");
    }
    // A declared Content-Length over the limit is refused from the head alone.
    let dir = tempdir();
    let file = dir.join("big.json");
    std::fs::write(&file, vec![b'A'; 1024 * 1024]).unwrap();
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--http1.1", "-H", "Authorization: Bearer x"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "413", "Content-Length over HTTP/1.1");
    // HTTP/2 with a declared length: answered before the window (64 KiB) is even used up.
    // (curl 7.88 loses an HTTP/2 answer that comes before its upload ends, hence the h2 crate.)
    let (status, sent) = h2_upload(&addr(&app), 1024 * 1024, Some(1024 * 1024)).await;
    assert_eq!(status, 413, "Content-Length over HTTP/2");
    assert!(sent <= 256 * 1024, "{sent} bytes sent before the answer");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("abuse-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads until the server closes the connection or `limit` passes; returns what was read and
/// when the connection closed (`None`: still open at `limit`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&received).into_owned(), Some(started.elapsed()));
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `text` a byte every `pause` until the server closes the connection (or the text ends);
/// returns how long the server let it go on.
async fn trickle(stream: &mut TcpStream, text: &[u8], pause: Duration) -> Option<Duration> {
    let started = Instant::now();
    for byte in text {
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut probe = [0u8; 1];
        // A read that ends (EOF) or fails means the server closed the connection.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(pause, stream.read(&mut probe)).await {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_head_deadline() {
    let limits = TransportLimits { head_timeout: Duration::from_secs(2), ..TransportLimits::default() };
    let app = app_with(limits).await;
    let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\n\r\n", "s".repeat(200));
    // Each byte comes well within any idle timeout; only a total deadline stops this.
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let cut = trickle(&mut stream, head.as_bytes(), Duration::from_millis(250)).await;
    let cut = cut.expect("a head trickled over 50 s was never cut off");
    assert!(cut < Duration::from_secs(4), "cut off only after {cut:?}");

    // The same on a second request of a keep-alive connection, and before HTTP/2's preface
    // is complete.
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let cut = trickle(&mut stream, head.as_bytes(), Duration::from_millis(250)).await;
    assert!(cut.is_some_and(|t| t < Duration::from_secs(4)), "second head cut off after {cut:?}");
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let cut = trickle(&mut stream, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Duration::from_millis(250)).await;
    assert!(cut.is_some_and(|t| t < Duration::from_secs(4)), "HTTP/2 preface cut off after {cut:?}");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_cut_off_with_408() {
    let limits = TransportLimits { body_timeout: Duration::from_secs(2), ..TransportLimits::default() };
    let app = app_with(limits).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let head = "POST /api/export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"account_id\"";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("a body 87 bytes short kept its connection open for 10 s");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_on_http1_and_http2() {
    let limits = TransportLimits {
        idle_timeout: Duration::from_millis(1500),
        head_timeout: Duration::from_secs(30),
        ..TransportLimits::default()
    };
    let app = app_with(limits).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("an idle keep-alive connection stayed open for 10 s");
    assert!(
        closed > Duration::from_millis(1000) && closed < Duration::from_secs(4),
        "closed after {closed:?}"
    );

    // HTTP/2 (prior knowledge), with the h2 crate as the client: after its one request the
    // server ends the idle connection (GOAWAY, then close).
    let tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let mut client = client.ready().await.unwrap();
    let request = poem::http::Request::get(format!("{}/health", app.base_url)).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let answered = Instant::now();
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("an idle HTTP/2 connection stayed open for 10 s")
        .unwrap();
    let idle = ended - answered;
    assert!(idle > Duration::from_millis(1000) && idle < Duration::from_secs(4), "closed after {idle:?}");
}

#[tokio::test]
async fn the_connection_after_the_cap_waits_until_one_closes() {
    let limits = TransportLimits { max_connections: 2, ..TransportLimits::default() };
    let app = app_with(limits).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(addr(&app)).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    let _second = TcpStream::connect(addr(&app)).await.unwrap();
    // The third connects (the kernel's backlog takes it) but is not served.
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third.write_all(request).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(1500), third.read(&mut buf)).await;
    assert!(waited.is_err(), "the third connection was served while two were open: {waited:?}");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_a_bare_400_and_a_closed_connection() {
    let app = TestApp::spawn().await;
    for request in [
        "NOT A REQUEST LINE\r\n\r\n".to_owned(),
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_owned(),
        "POST /api/export HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
            .to_owned(),
    ] {
        let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{request:?}: {answer}");
        assert!(closed.is_some(), "{request:?}: the connection stayed open");
    }
}

#[tokio::test]
async fn ordinary_requests_work_over_http1_keep_alive_and_h2c() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let health = format!("{}/health", app.base_url);
    // HTTP/1.1: two requests on one connection.
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--http1.1",
            "-w",
            "%{http_version} %{http_code} %{num_connects}\n",
        ])
        .args([&health, &health])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 200 1\n1.1 200 0\n");
    // h2c by prior knowledge, and an upgrade request (answered over HTTP/1.1).
    for (protocol, version) in [("--http2-prior-knowledge", "2"), ("--http2", "1.1")] {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", protocol, "-w", "%{http_version} %{http_code}", &health])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{version} 200"), "{protocol}");
    }
    // A request body with neither Content-Length nor chunking (HTTP/2) reaches the handler whole.
    let body = r#"{"account_id":"ACC-1","table_name":"bank_transactions","date_from":"2024-01-01","date_to":"2024-01-31"}"#;
    let mut child = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-T",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {key}"), "-H", "Content-Type: application/json"])
        .arg(format!("{}/api/export", app.base_url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, body.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.ends_with("\n2 202"), "{out}");
    assert!(out.contains("reference_id"), "{out}");
}
