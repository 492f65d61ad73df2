//! The API contract beyond the seed's two endpoints: listing with filters and cursors,
//! readiness, fresh statements only, rate limits, and deduplication under a thousand
//! concurrent identical requests.

use std::collections::HashSet;

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp};

fn request(account: &str, from: &str, to: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": from, "date_to": to})
}

async fn list(app: &TestApp, key: &str, query: &str) -> Value {
    let response =
        app.http.get(format!("{}/api/exports?{query}", app.base_url)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn exports_are_listed_newest_first_in_pages_with_filters_and_key_scope() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let mut created = Vec::new();
    for day in 1..=5 {
        let body =
            request(if day % 2 == 0 { "ACC-2" } else { "ACC-1" }, "2024-01-01", &format!("2024-01-0{day}"));
        let accepted: Value = app.post_export(&key, &body).await.json().await.unwrap();
        created.push(accepted["reference_id"].as_str().unwrap().to_owned());
    }
    created.reverse(); // newest first

    let first = list(&app, &key, "limit=2").await;
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reference_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), created[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(&app, &key, &format!("limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), created[2..4]);
    let third =
        list(&app, &key, &format!("limit=2&cursor={}", second["next_cursor"].as_str().unwrap())).await;
    assert_eq!(ids(&third), created[4..]);
    assert!(third["next_cursor"].is_null(), "the last page has no cursor");

    let acc2 = list(&app, &key, "account_id=ACC-2").await;
    assert_eq!(acc2["items"].as_array().unwrap().len(), 2);
    assert_eq!(list(&app, &key, "status=COMPLETED").await["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        list(&app, &key, "status=PENDING&table_name=bank_transactions").await["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        list(&app, &key, "created_from=2099-01-01T00:00:00Z").await["items"].as_array().unwrap().len(),
        0
    );

    // A key limited to ACC-1 sees only ACC-1's exports, whatever it asks for.
    let scoped = app.create_key(Some(&["ACC-1"])).await;
    assert_eq!(list(&app, &scoped, "").await["items"].as_array().unwrap().len(), 3);
    assert_eq!(list(&app, &scoped, "account_id=ACC-2").await["items"].as_array().unwrap().len(), 0);

    for bad in [
        "limit=0",
        "limit=201",
        "status=DONE",
        "cursor=not-a-uuid",
        &format!("cursor={}", uuid::Uuid::new_v4()),
    ] {
        let response = app
            .http
            .get(format!("{}/api/exports?{bad}", app.base_url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn ready_checks_postgres_source_and_storage() {
    let app = TestApp::spawn().await;
    let response = app.http.get(format!("{}/ready", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let names: Vec<&str> =
        body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["postgres", "source", "storage"]);

    // The source goes away: not ready, 503 with Retry-After, the dependency named.
    let mut config = app.config.clone();
    config.source_database_url =
        secrecy::SecretString::from("mysql://statements_ro:x@127.0.0.1:1/none".to_owned());
    let client = app.test_client(&config, 60, 10);
    let response = client.get("/ready").send().await;
    response.assert_status(poem::http::StatusCode::SERVICE_UNAVAILABLE);
    response.assert_header("retry-after", "5");
    response.assert_content_type("application/problem+json");
    let text = response.0.into_body().into_string().await.unwrap();
    assert!(text.contains("source"), "{text}");
}

#[tokio::test]
async fn an_open_period_export_is_reused_only_within_the_freshness_window() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let today = time::OffsetDateTime::now_utc().date();
    let month_ago = today - time::Duration::days(30);
    let open = request("ACC-1", &month_ago.to_string(), &today.to_string());
    let closed = request("ACC-1", "2024-01-01", "2024-01-31");
    for body in [&open, &closed] {
        let accepted: Value = app.post_export(&key, body).await.json().await.unwrap();
        app.run_until_settled(&key, accepted["reference_id"].as_str().unwrap()).await;
    }
    // Within the window both are reused, and say when their snapshot was taken.
    for body in [&open, &closed] {
        let again: Value = app.post_export(&key, body).await.json().await.unwrap();
        assert_eq!(again["reused"], true, "{again}");
        assert!(again["snapshot_at"].is_string());
    }
    // Ten minutes later (the window is five): the open period is exported afresh, the closed
    // one is still reused.
    app.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE exports SET snapshot_at = snapshot_at - interval '10 minutes'", &[])
        .await
        .unwrap();
    let open_again: Value = app.post_export(&key, &open).await.json().await.unwrap();
    assert_eq!(open_again["reused"], false, "{open_again}");
    let closed_again: Value = app.post_export(&key, &closed).await.json().await.unwrap();
    assert_eq!(closed_again["reused"], true, "{closed_again}");
}

#[tokio::test]
async fn a_thousand_concurrent_identical_requests_create_one_export() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let body = request("ACC-1", "2024-01-01", "2024-01-31");
    let responses = futures::future::join_all((0..1000).map(|_| app.post_export(&key, &body))).await;
    let mut ids = HashSet::new();
    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        ids.insert(response.json::<Value>().await.unwrap()["reference_id"].as_str().unwrap().to_owned());
    }
    assert_eq!((created, ids.len()), (1, 1));
    let count: i64 =
        app.pool.get().await.unwrap().query_one("SELECT count(*) FROM exports", &[]).await.unwrap().get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let app = TestApp::spawn().await;
    let limiter = api::rate_limit::RateLimiter::new(60, 2);
    let key = uuid::Uuid::new_v4();
    assert!(limiter.check(key).is_ok() && limiter.check(key).is_ok());
    assert!(limiter.check(key).is_err());

    // Through HTTP, with a tight limit.
    let client = app.test_client(&app.config, 60, 3);
    let plaintext = app.create_key(None).await;
    let id = uuid::Uuid::new_v4();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client
            .get(format!("/api/export/{id}"))
            .header("authorization", format!("Bearer {plaintext}"))
            .send()
            .await;
        statuses.push(response.0.status().as_u16());
        if response.0.status() == poem::http::StatusCode::TOO_MANY_REQUESTS {
            response.assert_header("retry-after", "1");
            response.assert_content_type("application/problem+json");
        }
    }
    assert_eq!(statuses, [404, 404, 404, 429]);
}

#[tokio::test]
async fn postgres_unreachable_is_503_with_retry_after_never_500() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let mut config = app.config.clone();
    config.database_url = secrecy::SecretString::from("postgres://postgres@127.0.0.1:1/nowhere".to_owned());
    let client = app.test_client(&config, 60, 10);
    let response = client
        .post("/api/export")
        .header("authorization", format!("Bearer {key}"))
        .body_json(&request("ACC-1", "2024-01-01", "2024-01-31"))
        .send()
        .await;
    response.assert_status(poem::http::StatusCode::SERVICE_UNAVAILABLE);
    response.assert_header("retry-after", "5");
    response.assert_content_type("application/problem+json");
    let text = response.0.into_body().into_string().await.unwrap();
    assert!(
        !text.contains("127.0.0.1:1") && !text.contains("Connection refused"),
        "internal text leaked: {text}"
    );
}

#[tokio::test]
async fn swagger_ui_and_the_spec_are_served() {
    let app = TestApp::spawn().await;
    let get = |path: &'static str| app.http.get(format!("{}{path}", app.base_url)).send();
    let json: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(json["info"]["title"], "Bank statement export service");
    // The committed spec but for its server: this service's PUBLIC_BASE_URL.
    assert_eq!(json["servers"][0]["url"], app.base_url.as_str());
    let spec = api::openapi_spec::published(&app.base_url);
    assert_eq!(json, serde_json::from_str::<Value>(&spec.json).unwrap());
    let yaml = get("/openapi.yaml").await.unwrap().text().await.unwrap();
    assert_eq!(yaml, spec.yaml);
    assert_eq!(api::openapi_yaml().replace("http://127.0.0.1:8080", &app.base_url), yaml);
    // Swagger UI shows the same spec (the download operation, the server).
    let docs = get("/docs").await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger") && page.contains(&spec.json), "/docs does not embed the served spec");
}

#[tokio::test]
async fn a_download_link_is_an_instance_of_the_documented_download_operation() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let accepted: Value =
        app.post_export(&key, &request("ACC-1", "2024-01-01", "2024-01-31")).await.json().await.unwrap();
    let id = accepted["reference_id"].as_str().unwrap();
    let details = app.run_until_settled(&key, id).await;
    let link = reqwest::Url::parse(details["file_url"].as_str().unwrap()).unwrap();
    assert!(link.as_str().starts_with(&format!("{}/files/", app.base_url)), "{link}");

    let spec: Value = serde_json::from_str(&api::openapi_spec::published(&app.base_url).json).unwrap();
    let operation = &spec["paths"][api::openapi_spec::DOWNLOAD_PATH]["get"];
    let parameter = |name: &str| {
        operation["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone()
    };
    // Segment by segment: a literal equals the link's, a parameter holds one segment that
    // satisfies its schema.
    let template: Vec<&str> = api::openapi_spec::DOWNLOAD_PATH.split('/').collect();
    let segments: Vec<&str> = link.path().split('/').collect();
    assert_eq!(template.len(), segments.len(), "{} vs {}", link.path(), api::openapi_spec::DOWNLOAD_PATH);
    for (part, segment) in template.iter().zip(&segments) {
        let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
            assert_eq!(part, segment);
            continue;
        };
        let schema = &parameter(name)["schema"];
        if let Some(pattern) = schema["pattern"].as_str() {
            assert!(regex::Regex::new(pattern).unwrap().is_match(segment), "{name} = {segment} !~ {pattern}");
        } else {
            assert_eq!(schema["format"], "uuid");
            assert_eq!(*segment, id);
        }
    }
    // The query: exactly the documented parameters, each of its type.
    let query: Vec<(String, String)> = link.query_pairs().into_owned().collect();
    let names: Vec<&str> = query.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["expires", "link", "signature"]);
    assert_eq!(parameter("expires")["schema"]["type"], "integer");
    assert!(query[0].1.parse::<i64>().is_ok());
    assert_eq!(parameter("link")["schema"]["format"], "uuid");
    assert!(query[1].1.parse::<uuid::Uuid>().is_ok());

    let response = app.download(link.as_str()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        operation["responses"]["200"]["content"][response.headers()["content-type"].to_str().unwrap()]
            .is_object()
    );
}
