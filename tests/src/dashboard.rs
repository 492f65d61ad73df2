//! A browser-like client of the dashboard for HTTP-level tests: keeps its cookies, never
//! follows redirects (tests look at them), and adds the page's CSRF token to its forms.

use reqwest::{StatusCode, header};

use crate::TestApp;

pub struct DashboardClient {
    base_url: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
    /// The CSRF token of the last page that carried one.
    pub csrf: Option<String>,
}

/// A page as fetched: status, `Location` (redirects), body.
pub struct Fetched {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: header::HeaderMap,
    pub body: String,
}

impl DashboardClient {
    /// A client with no cookies (signed out).
    pub fn new(app: &TestApp) -> Self {
        Self::at(&app.base_url)
    }

    /// A client with no cookies of the API at `base_url` (another process than the app's own).
    pub fn at(base_url: &str) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base_url: base_url.to_owned(), http, cookies: Vec::new(), csrf: None }
    }

    /// Signs in with `key` through the sign-in form; panics unless it succeeds.
    pub async fn signed_in(app: &TestApp, key: &str) -> Self {
        let mut client = Self::new(app);
        let page = client.sign_in(key).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "sign-in failed: {}", page.body);
        client.get("/dashboard").await;
        client
    }

    /// Loads the sign-in form and submits `key` with the form's token.
    pub async fn sign_in(&mut self, key: &str) -> Fetched {
        self.get("/dashboard/sign-in").await;
        self.post("/dashboard/sign-in", &[("api_key", key)]).await
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_owned(), value.to_owned()));
    }

    pub async fn get(&mut self, path: &str) -> Fetched {
        let request = self.http.get(format!("{}{path}", self.base_url));
        self.send(request).await
    }

    /// Posts a form with the current CSRF token (when there is one) and `fields`.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Fetched {
        let csrf = self.csrf.clone();
        let mut all: Vec<(&str, &str)> = csrf.iter().map(|t| ("csrf", t.as_str())).collect();
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// Posts exactly `fields` (no CSRF token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Fetched {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        self.send(request).await
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Fetched {
        let cookie_header =
            self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let request =
            if cookie_header.is_empty() { request } else { request.header(header::COOKIE, cookie_header) };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (name, value) = set.split(';').next().unwrap().split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.retain(|(n, _)| n != name);
            } else {
                self.set_cookie(name, value);
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        if let Some(token) = hidden_value(&body, "csrf") {
            self.csrf = Some(token);
        }
        Fetched { status, location, headers, body }
    }
}

/// The value of the first hidden input named `name` in a page.
pub fn hidden_value(page: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page.find(&marker)? + marker.len();
    Some(page[start..start + page[start..].find('"')?].to_owned())
}
