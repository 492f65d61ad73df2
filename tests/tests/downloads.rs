//! Resumable, verifiable, recorded downloads: a file fetched in ranges reassembles to its
//! `sha256`; `ETag`, `If-None-Match`, `If-Range`, `HEAD`, `416` and `Repr-Digest` (checked by
//! hand and by a Structured Fields parser we did not write, PyPI's `http-sf`); curl resumes an
//! interrupted download with `-C -`; an S3 pre-signed link serves ranges; every link issued
//! and every download served is recorded, counted in GET and listed on the dashboard.

use base64::Engine as _;
use serde_json::{Value, json};
use shared::{config::StorageConfig, tables::TableRegistry};
use testkit::{StatusCode, TestApp, dashboard::DashboardClient, s3::S3sServer, sha256_hex};
use uuid::Uuid;

fn year_2024(account: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

/// A completed export of `rows` generated rows: the key that asked for it and its details (one
/// download link minted: the read that saw it COMPLETED).
async fn completed(app: &TestApp, account: &str, rows: u64) -> (String, Value) {
    app.insert_generated_rows(account, 1, rows).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &year_2024(account)).await.json().await.unwrap();
    let details = app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    (key, details)
}

async fn get(app: &TestApp, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response.headers().get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
}

/// `Repr-Digest` of these bytes, computed here: `sha-256=:base64(SHA-256):`.
fn expected_digest(bytes: &[u8]) -> String {
    let hex_digest = sha256_hex(bytes);
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_digest).unwrap())
    )
}

/// The hex SHA-256 a `Repr-Digest` value carries, as PyPI's `http-sf` (an RFC 9651 parser we
/// did not write) reads it: a dictionary whose `sha-256` member is a byte sequence.
fn digest_by_http_sf(value: &str) -> String {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.local/venv/bin/python");
    let script = "import sys, http_sf\n\
                  parsed = http_sf.parse(sys.argv[1].encode(), tltype='dictionary')\n\
                  value, params = parsed['sha-256']\n\
                  assert isinstance(value, bytes) and params == {}, parsed\n\
                  print(value.hex())";
    let output = std::process::Command::new(python).args(["-c", script, value]).output().unwrap();
    assert!(
        output.status.success(),
        "http-sf: {} (scripts/test.sh installs it into .local/venv)",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")))
}

/// One recorded download, as stored.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Recorded {
    status: i16,
    range: Option<(i64, i64)>,
    bytes_sent: i64,
    link_id: Option<Uuid>,
    client: String,
}

async fn recorded_downloads(app: &TestApp, export: &str) -> Vec<Recorded> {
    let db = app.pool.get().await.unwrap();
    let rows = db
        .query(
            "SELECT status, range_first, range_last, bytes_sent, link_id, host(client_addr)
             FROM export_downloads WHERE export_id = $1::text::uuid ORDER BY id",
            &[&export],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| Recorded {
            status: r.get(0),
            range: r.get::<_, Option<i64>>(1).zip(r.get::<_, Option<i64>>(2)),
            bytes_sent: r.get(3),
            link_id: r.get(4),
            client: r.get(5),
        })
        .collect()
}

#[tokio::test]
async fn a_file_fetched_in_ranges_reassembles_to_its_sha256_and_every_request_is_recorded() {
    let app = TestApp::spawn().await;
    let (key, details) = completed(&app, "ACC-DL", 5_000).await;
    let id = details["reference_id"].as_str().unwrap();
    let sha256 = details["sha256"].as_str().unwrap();
    let url = details["file_url"].as_str().unwrap();
    let link: Uuid = param(url, "link").expect("a link id in the signed query").parse().unwrap();
    let etag = format!("\"{sha256}\"");

    // The whole file: 200 with its validators.
    let whole = get(&app, url, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    assert_eq!(header(&whole, "etag"), etag);
    let digest = header(&whole, "repr-digest").to_owned();
    let full = whole.bytes().await.unwrap().to_vec();
    let len = full.len();
    assert!(len > 100_000, "{len} bytes");
    assert_eq!(details["file_size"], len);
    assert_eq!(sha256_hex(&full), sha256);
    assert_eq!(digest, expected_digest(&full), "Repr-Digest computed here");
    assert_eq!(digest_by_http_sf(&digest), sha256, "Repr-Digest as http-sf parses it");

    // Four ranges, in the three forms, reassemble to the same bytes; each 206 carries the
    // digest of the whole file.
    let cuts = [(0, 999), (1000, len / 2), (len / 2 + 1, len - 101)];
    let mut asked: Vec<(String, usize, usize)> =
        cuts.iter().map(|&(a, b)| (format!("bytes={a}-{b}"), a, b)).collect();
    asked.push(("bytes=-100".into(), len - 100, len - 1));
    let mut reassembled = Vec::new();
    for (range, first, last) in &asked {
        let part = get(&app, url, &[("range", range)]).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&part, "content-range"), format!("bytes {first}-{last}/{len}"));
        assert_eq!(header(&part, "content-length"), (last - first + 1).to_string());
        assert_eq!(header(&part, "etag"), etag);
        assert_eq!(header(&part, "repr-digest"), digest, "the whole representation's digest");
        reassembled.extend_from_slice(&part.bytes().await.unwrap());
    }
    assert!(reassembled == full, "the ranges reassemble to the full download");
    assert_eq!(sha256_hex(&reassembled), sha256);

    // If-None-Match (weak comparison) → 304 without a body; another tag → the file.
    for held in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}")] {
        let response = get(&app, url, &[("if-none-match", &held)]).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{held}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let another = get(&app, url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(another.status(), StatusCode::OK);
    assert_eq!(another.bytes().await.unwrap().len(), len);
    // If-Range: the range while the file is the one held, else the whole file.
    let resumed = get(&app, url, &[("range", "bytes=10-19"), ("if-range", &etag)]).await;
    assert_eq!(resumed.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resumed.bytes().await.unwrap(), full[10..20]);
    let changed = get(&app, url, &[("range", "bytes=10-19"), ("if-range", "\"older\"")]).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.bytes().await.unwrap().len(), len);
    // Several ranges: the whole file (documented).
    let several = get(&app, url, &[("range", "bytes=0-9,20-29")]).await;
    assert_eq!(several.status(), StatusCode::OK);
    assert_eq!(several.bytes().await.unwrap().len(), len);

    // Nothing of the file in the range: 416, a problem document naming the length.
    let beyond = get(&app, url, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&beyond, "content-range"), format!("bytes */{len}"));
    assert_eq!(header(&beyond, "content-type"), "application/problem+json");
    let problem: Value = beyond.json().await.unwrap();
    assert_eq!(problem["status"], 416);

    // HEAD: the headers of a 200, no body (and no range); a 304 when the copy is current.
    let head = app.http.head(url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    for headers in [vec![], vec![("range", "bytes=0-9")]] {
        let mut request = app.http.head(url);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let head = request.send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(header(&head, "content-length"), len.to_string());
        assert_eq!(header(&head, "etag"), etag);
        assert_eq!(header(&head, "repr-digest"), digest);
        assert_eq!(header(&head, "accept-ranges"), "bytes");
        assert!(head.bytes().await.unwrap().is_empty());
    }

    // A link is still refused when altered or expired: the link id is under the signature.
    let other_link = url.replace(&link.to_string(), &Uuid::new_v4().to_string());
    let no_link = url.replace(&format!("link={link}&"), "");
    let bad_link = url.replace(&link.to_string(), "not-a-uuid");
    for bad in [&other_link, &no_link, &bad_link] {
        let response = get(&app, bad, &[("range", "bytes=0-9")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{bad}");
    }
    let key_path = url.split("/files/").nth(1).unwrap().split('?').next().unwrap();
    let secret = app.config.signing_secret.as_ref().unwrap();
    let signer = shared::signing::UrlSigner::new(secrecy::ExposeSecret::expose_secret(secret).as_bytes());
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    let expired = format!(
        "{}/files/{key_path}?expires={past}&link={link}&signature={}",
        app.base_url,
        signer.sign_link(key_path, past, link)
    );
    let response = get(&app, &expired, &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("expired"));
    // A link signed as before links had ids keeps working (recorded without a link).
    let future = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
    let old = format!(
        "{}/files/{key_path}?expires={future}&signature={}",
        app.base_url,
        signer.sign(key_path, future)
    );
    let response = get(&app, &old, &[("range", "bytes=0-9")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap(), full[..10]);

    // Every GET a valid link let through is recorded (HEADs and refusals are not). Compared
    // sorted: a whole file is recorded when its body is done, which may be just after the next
    // request is.
    let (len, client) = (len as i64, "127.0.0.1".to_owned());
    let row = |status, range: Option<(i64, i64)>, bytes_sent, link_id| Recorded {
        status,
        range,
        bytes_sent,
        link_id,
        client: client.clone(),
    };
    let mut expected = vec![row(200, None, len, Some(link))];
    for (_, first, last) in &asked {
        let (first, last) = (*first as i64, *last as i64);
        expected.push(row(206, Some((first, last)), last - first + 1, Some(link)));
    }
    expected.extend([
        row(304, None, 0, Some(link)),
        row(304, None, 0, Some(link)),
        row(304, None, 0, Some(link)),
        row(200, None, len, Some(link)),
        row(206, Some((10, 19)), 10, Some(link)),
        row(200, None, len, Some(link)),
        row(200, None, len, Some(link)),
        row(416, None, 0, Some(link)),
        row(206, Some((0, 9)), 10, None),
    ]);
    let sent_file = expected.iter().filter(|r| matches!(r.status, 200 | 206)).count();
    app.wait_for(&format!("SELECT count(*) = {} FROM export_downloads", expected.len())).await;
    let mut recorded = recorded_downloads(&app, id).await;
    recorded.sort();
    expected.sort();
    assert_eq!(recorded, expected);

    // Links: each read of the COMPLETED export minted one, recorded with its key; the counts
    // come back in GET once flushed (a second or so behind, this read's own link not yet in).
    for _ in 0..3 {
        assert_eq!(app.get_export(&key, id).await.status(), StatusCode::OK);
    }
    app.wait_for(&format!(
        "SELECT download_links_issued = 4 AND downloads = {sent_file} FROM exports WHERE id = '{id}'"
    ))
    .await;
    let counted: Value = app.get_export(&key, id).await.json().await.unwrap();
    assert_eq!(
        (counted["download_links_issued"].as_i64(), counted["downloads"].as_i64()),
        (Some(4), Some(sent_file as i64))
    );
    app.wait_for("SELECT count(*) = 5 FROM download_links").await;
    let db = app.pool.get().await.unwrap();
    let rows = db
        .query(
            "SELECT l.via, l.backend, k.name, l.operator_id IS NULL, extract(epoch FROM l.expires_at - l.issued_at)::float8
             FROM download_links l JOIN api_keys k ON k.id = l.api_key_id WHERE l.export_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "every link names the key it was issued to");
    for row in &rows {
        assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("api".into(), "local".into()));
        assert_eq!(row.get::<_, String>(2), "test");
        assert!(row.get::<_, bool>(3));
        assert!((row.get::<_, f64>(4) - 300.0).abs() < 1.0, "issued for DOWNLOAD_URL_TTL_SECS");
    }
    let first = db.query_one("SELECT count(*) FROM download_links WHERE id = $1", &[&link]).await.unwrap();
    assert_eq!(first.get::<_, i64>(0), 1, "the link in the URL is the recorded one");
}

/// Runs the curl binary (off the test's runtime, which serves the API) with `args`, the output
/// file and the URL.
async fn curl(args: &[&str], file: &std::path::Path, url: &str) -> std::process::Output {
    let mut command = std::process::Command::new("curl");
    command.args(args).arg(file).arg(url);
    tokio::task::spawn_blocking(move || command.output().expect("the curl binary runs")).await.unwrap()
}

#[tokio::test]
async fn curl_resumes_an_interrupted_download_with_c_and_ends_with_the_right_sha256() {
    let app = TestApp::spawn().await;
    let (_, details) = completed(&app, "ACC-CURL", 60_000).await;
    let id = details["reference_id"].as_str().unwrap();
    let url = details["file_url"].as_str().unwrap();
    let size = details["file_size"].as_u64().unwrap();
    let dir = std::env::temp_dir().join(format!("curl-resume-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("statement.csv");

    // Interrupted: a slow transfer cut off after a second (curl's timeout, exit code 28).
    let cut = curl(
        &[
            "-sS",
            "--fail",
            "-w",
            "%{http_code} %{size_download}",
            "--limit-rate",
            "200K",
            "--max-time",
            "1",
            "-o",
        ],
        &file,
        url,
    )
    .await;
    let seen = format!("{} {}", String::from_utf8_lossy(&cut.stdout), String::from_utf8_lossy(&cut.stderr));
    assert_eq!(cut.status.code(), Some(28), "curl was cut off by its timeout: {seen} of {size} bytes");
    let partial = std::fs::metadata(&file).unwrap().len();
    assert!(partial > 0 && partial < size, "{partial} of {size} bytes");

    // Resumed: `-C -` asks for the rest (Range: bytes={partial}-) and appends it.
    let resumed = curl(&["-sS", "--fail", "-C", "-", "-o"], &file, url).await;
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(sha256_hex(&bytes), details["sha256"].as_str().unwrap());

    // Both recorded: the cut-off 200 (at least what curl kept was sent; it is recorded when the
    // server notices the client gone, which may be after the resumed one) and the 206 for the rest.
    app.wait_for("SELECT count(*) = 2 FROM export_downloads").await;
    let mut rows = recorded_downloads(&app, id).await;
    rows.sort();
    assert_eq!(rows[0].status, 200);
    assert!(rows[0].bytes_sent as u64 >= partial, "{rows:?}");
    let (partial, size) = (partial as i64, size as i64);
    assert_eq!(
        (rows[1].status, rows[1].range, rows[1].bytes_sent),
        (206, Some((partial, size - 1)), size - partial)
    );
}

#[tokio::test]
async fn an_s3_presigned_link_serves_ranges_and_its_links_are_recorded() {
    let s3s = S3sServer::start().await;
    let app =
        TestApp::spawn_configured(TableRegistry::demo(), |c| c.storage = StorageConfig::S3(s3s.config()))
            .await;
    let (key, details) = completed(&app, "ACC-S3R", 2_000).await;
    let id = details["reference_id"].as_str().unwrap();
    let url = details["file_url"].as_str().unwrap();
    assert!(url.starts_with(&s3s.endpoint()) && url.contains("X-Amz-Signature="), "pre-signed: {url}");
    assert!(param(url, "link").is_none(), "S3 links carry no link id");

    let full = get(&app, url, &[]).await.bytes().await.unwrap().to_vec();
    assert_eq!(sha256_hex(&full), details["sha256"].as_str().unwrap(), "verified against `sha256`");
    let len = full.len();
    // The server checks the signature: a Range header (not signed) leaves it valid.
    for (range, first, last) in
        [("bytes=10-99".to_owned(), 10, 99), ("bytes=-50".to_owned(), len - 50, len - 1)]
    {
        let part = get(&app, url, &[("range", &range)]).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&part, "content-range"), format!("bytes {first}-{last}/{len}"));
        assert_eq!(part.bytes().await.unwrap(), full[first..=last]);
    }

    // Links are recorded on S3 too (downloads from S3 are not seen by the service).
    assert_eq!(app.get_export(&key, id).await.status(), StatusCode::OK);
    app.wait_for(&format!("SELECT download_links_issued = 2 FROM exports WHERE id = '{id}'")).await;
    let counted: Value = app.get_export(&key, id).await.json().await.unwrap();
    assert_eq!(
        (counted["download_links_issued"].as_i64(), counted["downloads"].as_i64()),
        (Some(2), Some(0))
    );
    app.wait_for("SELECT count(*) = 3 FROM download_links WHERE backend = 's3' AND via = 'api'").await;
    let db = app.pool.get().await.unwrap();
    let none = db.query_one("SELECT count(*) FROM export_downloads", &[]).await.unwrap();
    assert_eq!(none.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn the_export_page_lists_its_links_and_downloads_newest_first() {
    let app = TestApp::spawn().await;
    let (_, details) = completed(&app, "ACC-PAGE", 500).await;
    let id = details["reference_id"].as_str().unwrap();
    let admin_key = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;

    // The page hands its operator a link of its own (recorded as the dashboard's).
    let page = browser.get(&format!("/dashboard/exports/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let href = page.body.split("href=\"").find(|s| s.contains("/files/exports/")).unwrap();
    let dashboard_link = href.split('"').next().unwrap().replace("&amp;", "&");
    let ranged = get(&app, &dashboard_link, &[("range", "bytes=0-9")]).await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(get(&app, details["file_url"].as_str().unwrap(), &[]).await.status(), StatusCode::OK);

    app.wait_for("SELECT count(*) = 2 FROM download_links").await;
    app.wait_for("SELECT count(*) = 2 FROM export_downloads").await;
    let page = browser.get(&format!("/dashboard/exports/{id}")).await.body;
    let links =
        &page[page.find("<h2>Download links</h2>").unwrap()..page.find("<h2>Downloads</h2>").unwrap()];
    assert!(links.contains("2 issued, 2 downloads"), "{links}");
    // Newest first: the operator's (a break-glass key), then the client key's.
    let operator = links.find("key operator (").unwrap();
    let client = links.find("key test (").unwrap();
    assert!(operator < client, "{links}");
    assert!(links.contains("<td>dashboard</td>") && links.contains("<td>api</td>"), "{links}");
    let downloads = &page[page.find("<h2>Downloads</h2>").unwrap()..];
    let whole = downloads.find(">200<").unwrap();
    let range = downloads.find(">206<").unwrap();
    assert!(whole < range, "newest first: {downloads}");
    assert!(downloads.contains(">0-9<") && downloads.contains("127.0.0.1"), "{downloads}");
    assert!(downloads.contains("key operator (") && downloads.contains("key test ("), "{downloads}");
}
