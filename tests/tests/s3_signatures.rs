//! Exports to an S3 server that checks every signature (s3s-fs): multipart uploads, pre-signed
//! links that expire and cannot be altered, credentials from the environment (the `AWS_*`
//! variables, a container endpoint, instance metadata), links signed for the host clients reach
//! (`S3_PUBLIC_ENDPOINT`). And what moto records of the rest: server-side
//! encryption and checksums asked for on upload.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    config::{Config, S3Config, S3Encryption, StorageConfig},
    storage::{Storage, WRITE_CHECK_KEY},
    tables::TableRegistry,
};
use testkit::{
    StatusCode, TestApp,
    s3::{BUCKET, ChaosProxy, CredentialEndpoint, MotoServer, S3sServer},
    sha256_hex,
};

const ROWS: u64 = 200_000;

fn year_2024(account: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

async fn s3_app(s3: S3Config, adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_configured(TableRegistry::demo(), |c| {
        c.storage = StorageConfig::S3(s3);
        adjust(c);
    })
    .await
}

/// Exports `rows` generated rows and returns the completed export's details.
async fn completed(app: &TestApp, rows: u64) -> Value {
    app.insert_generated_rows("ACC-S3", 1, rows).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &year_2024("ACC-S3")).await.json().await.unwrap();
    let details = app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    details
}

/// The object key of an export's file, from its link (`…/<bucket>/<key>?…`, path style).
fn object_key(file_url: &str, bucket: &str) -> String {
    let path = file_url.split('?').next().unwrap();
    path.split_once(&format!("/{bucket}/")).unwrap().1.to_owned()
}

#[tokio::test]
async fn a_multipart_export_on_a_signature_checking_server_is_byte_identical_to_the_local_one() {
    let s3s = S3sServer::start().await;
    let on_s3 = s3_app(s3s.config(), |_| {}).await;
    let local = TestApp::spawn().await;
    let details = completed(&on_s3, ROWS).await;
    let local_details = completed(&local, ROWS).await;

    let url = details["file_url"].as_str().unwrap();
    assert!(url.starts_with(&s3s.endpoint()) && url.contains("X-Amz-Signature="), "a pre-signed GET: {url}");
    let from_s3 = on_s3.download(url).await.bytes().await.unwrap().to_vec();
    let from_disk = local.download(local_details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert!(from_s3.len() > 3 * 5 * 1024 * 1024, "more than three 5 MiB parts: {}", from_s3.len());
    assert!(from_s3 == from_disk, "S3 and local exports differ");
    assert_eq!(details["sha256"], sha256_hex(&from_s3));
    // What the server stored (read from its directory, not through the service).
    let id = details["reference_id"].as_str().unwrap();
    let key = object_key(url, S3sServer::BUCKET);
    assert_eq!(s3s.keys(&format!("exports/{id}/")), std::slice::from_ref(&key));
    assert!(s3s.stored(&key) == from_disk, "the stored object differs");
}

/// `url` with the query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((n, _)) if n == name => format!("{n}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn param<'u>(url: &'u str, name: &str) -> &'u str {
    let query = url.split_once('?').unwrap().1;
    query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}="))).unwrap()
}

#[tokio::test]
async fn a_presigned_link_that_expired_or_was_altered_is_refused_and_an_unaltered_one_works() {
    let s3s = S3sServer::start().await;
    let app = s3_app(s3s.config(), |c| c.download_url_ttl = Duration::from_secs(3)).await;
    let details = completed(&app, 100).await;
    let url = details["file_url"].as_str().unwrap();
    assert_eq!(param(url, "X-Amz-Expires"), "3");

    let response = app.download(url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(details["sha256"], sha256_hex(&response.bytes().await.unwrap()));

    // One hex digit of the signature changed.
    let signature = param(url, "X-Amz-Signature");
    let last = if signature.ends_with('0') { "1" } else { "0" };
    let forged = with_param(url, "X-Amz-Signature", &format!("{}{last}", &signature[..signature.len() - 1]));
    assert_eq!(app.download(&forged).await.status(), StatusCode::FORBIDDEN, "altered signature");
    // A longer life, the signature kept.
    let extended = with_param(url, "X-Amz-Expires", "604800");
    assert_eq!(app.download(&extended).await.status(), StatusCode::FORBIDDEN, "altered expiry");
    // Another object under the same signature.
    let elsewhere = url.replacen("/exports/", "/exports-copy/", 1);
    assert_eq!(app.download(&elsewhere).await.status(), StatusCode::FORBIDDEN, "altered key");

    // Past its expiry the same link is refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.download(url).await.status(), StatusCode::FORBIDDEN, "expired");
}

#[tokio::test]
async fn links_are_signed_for_the_public_endpoint_and_work_through_it() {
    let s3s = S3sServer::start().await;
    // Clients reach storage through a front (another host name and port); the service goes
    // straight to the server.
    let front = ChaosProxy::start(s3s.addr).await;
    let public = format!("http://localhost:{}", front.addr.port());
    let app = s3_app(S3Config { public_endpoint: Some(public.clone()), ..s3s.config() }, |_| {}).await;
    let details = completed(&app, 1000).await;

    let url = details["file_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{public}/{}/exports/", S3sServer::BUCKET)), "{url}");
    let response = app.download(url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(details["sha256"], sha256_hex(&response.bytes().await.unwrap()));
    // The signature covers the host: the same link sent to the service's endpoint is refused,
    // which is why a link must be signed for the host clients use.
    let direct = url.replacen(&public, &s3s.endpoint(), 1);
    assert_eq!(app.download(&direct).await.status(), StatusCode::FORBIDDEN);
}

/// Set only in the process of the child test below: the session token its links must carry.
const AWS_CHILD: &str = "STATEMENT_TESTS_AWS_CHILD";

/// Runs [`an_export_with_the_credentials_of_the_environment`] in a process of its own whose
/// environment is the test's, without any `S3_*` credentials, plus `credentials` (the `AWS_*`
/// variables of one source): its API and worker must find them, export to s3s-fs and hand out
/// a link that carries `session_token` and works.
async fn export_in_a_process_with(credentials: &[(&str, String)], session_token: &str) {
    let s3s = S3sServer::start().await;
    // Async: the credential endpoints answer on this test's runtime meanwhile.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "an_export_with_the_credentials_of_the_environment", "--ignored", "--nocapture"])
        .env(AWS_CHILD, session_token)
        .envs([
            ("STORAGE_BACKEND", "s3"),
            ("S3_BUCKET", S3sServer::BUCKET),
            ("S3_ENDPOINT", &s3s.endpoint()),
            ("S3_PATH_STYLE", "true"),
            ("AWS_REGION", "us-east-1"),
        ]);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name.starts_with("S3_ACCESS") || name.starts_with("S3_SECRET") {
            child.env_remove(name);
        }
    }
    child.envs(credentials.iter().map(|(name, value)| (name, value)));
    let output = child.output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert_eq!(s3s.keys("exports/").len(), 1, "the export's file is on the server");
}

#[tokio::test]
async fn credentials_from_the_aws_variables_work_end_to_end() {
    let credentials = [
        ("AWS_ACCESS_KEY_ID", S3sServer::ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3sServer::SECRET_ACCESS_KEY.to_owned()),
        ("AWS_SESSION_TOKEN", "a-session-token-of-temporary-credentials".to_owned()),
    ];
    export_in_a_process_with(&credentials, "a-session-token-of-temporary-credentials").await;
}

#[tokio::test]
async fn temporary_credentials_from_a_container_endpoint_work_end_to_end() {
    let endpoint = CredentialEndpoint::start(
        S3sServer::ACCESS_KEY_ID,
        S3sServer::SECRET_ACCESS_KEY,
        "from-the-pod-endpoint",
    )
    .await;
    let token_file = std::env::temp_dir().join(format!("pod-token-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&token_file, CredentialEndpoint::AUTHORIZATION).unwrap();
    let credentials = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v1/credentials", endpoint.url())),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.display().to_string()),
    ];
    export_in_a_process_with(&credentials, "from-the-pod-endpoint").await;
    std::fs::remove_file(token_file).unwrap();
    assert!(endpoint.served() >= 1, "the credentials came from the endpoint");
}

#[tokio::test]
async fn temporary_credentials_from_instance_metadata_work_end_to_end() {
    let imds = CredentialEndpoint::start(
        S3sServer::ACCESS_KEY_ID,
        S3sServer::SECRET_ACCESS_KEY,
        "from-the-instance-role",
    )
    .await;
    export_in_a_process_with(&[("AWS_METADATA_ENDPOINT", imds.url())], "from-the-instance-role").await;
    assert!(imds.served() >= 1, "the credentials came from the instance metadata service");
}

#[tokio::test]
#[ignore = "run by the *_work_end_to_end tests, in a process with the AWS_* variables of one credential source"]
async fn an_export_with_the_credentials_of_the_environment() {
    let session_token = std::env::var(AWS_CHILD).expect("run by a parent test only");
    // The settings as the binaries read them: S3 storage, no S3 credentials.
    let StorageConfig::S3(s3) = Config::from_env().unwrap().storage else { panic!("STORAGE_BACKEND=s3") };
    assert!(s3.credentials.is_none());
    let app = s3_app(s3, |_| {}).await;
    let details = completed(&app, 1000).await;
    let url = details["file_url"].as_str().unwrap();
    assert!(url.contains(&format!("X-Amz-Credential={}%2F", S3sServer::ACCESS_KEY_ID)), "{url}");
    assert!(url.contains(&format!("X-Amz-Security-Token={session_token}&")), "{url}");
    let response = app.download(url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(details["sha256"], sha256_hex(&response.bytes().await.unwrap()));
}

/// The headers moto answers a HEAD of `key` with. (moto refuses some anonymous requests; any
/// credentials will do, it does not check them.)
async fn head(moto: &MotoServer, key: &str, headers: &[(&str, &str)]) -> reqwest::header::HeaderMap {
    let authorization = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0";
    let mut request = reqwest::Client::new()
        .head(format!("{}/{BUCKET}/{key}", moto.endpoint()))
        .header("authorization", authorization);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "HEAD {key}");
    response.headers().clone()
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn server_side_encryption_is_asked_for_on_every_object_written() {
    let moto = MotoServer::start().await;
    let kms = S3Encryption::Kms { key_id: Some("alias/statement-exports".into()) };
    for (encryption, algorithm, kms_key) in [
        (S3Encryption::Aes256, "AES256", None),
        (kms, "aws:kms", Some("alias/statement-exports")),
        (S3Encryption::Kms { key_id: None }, "aws:kms", None),
    ] {
        let s3 = S3Config { encryption, ..testkit::s3::s3_config(moto.endpoint()) };
        let app = s3_app(s3.clone(), |_| {}).await;
        let details = completed(&app, 1000).await;
        // The export (a multipart upload) and the workers' write check (a single PUT).
        let storage = Storage::new(&StorageConfig::S3(s3), app.config.upload_part_size).unwrap();
        storage.check_writable().await.unwrap();
        for key in [object_key(details["file_url"].as_str().unwrap(), BUCKET), WRITE_CHECK_KEY.to_owned()] {
            let headers = head(&moto, &key, &[]).await;
            assert_eq!(header(&headers, "x-amz-server-side-encryption"), Some(algorithm), "{key}");
            let recorded_key = header(&headers, "x-amz-server-side-encryption-aws-kms-key-id");
            match kms_key {
                Some(kms_key) => {
                    assert!(recorded_key.is_some_and(|k| k.ends_with(kms_key)), "{key}: {headers:?}")
                }
                None if algorithm == "AES256" => assert_eq!(recorded_key, None, "{key}"),
                None => {}
            }
        }
    }
}

#[tokio::test]
async fn a_sha256_checksum_is_sent_with_every_part_unless_turned_off() {
    let moto = MotoServer::start().await;
    for checksum in [true, false] {
        let s3 = S3Config { checksum, ..testkit::s3::s3_config(moto.endpoint()) };
        let app = s3_app(s3, |_| {}).await;
        let details = completed(&app, 1000).await;
        let key = object_key(details["file_url"].as_str().unwrap(), BUCKET);
        let headers = head(&moto, &key, &[("x-amz-checksum-mode", "ENABLED")]).await;
        let recorded = header(&headers, "x-amz-checksum-sha256");
        assert_eq!(recorded.is_some(), checksum, "S3_CHECKSUM={checksum}: {headers:?}");
    }
}
