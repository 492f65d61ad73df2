//! A real OpenID provider for the sign-in tests: panva's `oidc-provider` (npm, pinned in
//! `tests/oidc/package.json`) run by `node tests/oidc/provider.mjs` on a loopback port.
//!
//! One confidential client (`client_secret_basic`), the authorization code flow with PKCE S256,
//! no consent screen, RP-initiated logout and `prompt=none`. Its login page is oidc-provider's
//! development form: any password signs in, the login name is the `sub`, and `name`, `email` and
//! `groups` come from the accounts given to [`OidcProvider::start`] and are put in the ID token.
//!
//! [`OidcProvider::authorize`] plays the browser on the provider's side: from the authorization URL
//! the relying party redirected to, through the login form, to the redirect back to the relying
//! party. [`OidcProvider::tamper_next`] alters the ID token of the next token response (a bad
//! signature, expired, another nonce, audience or issuer, `alg: none`) and
//! [`OidcProvider::restart`] rotates the signing key.
//!
//! `tests/oidc/node_modules` is installed on first use (`npm ci`, under a file lock, so test
//! binaries started together install it once).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use regex::Regex;
use reqwest::{
    StatusCode, Url,
    header::{CONTENT_TYPE, LOCATION},
};
use serde_json::Value;

/// The npm project holding the provider (`provider.mjs`, `package-lock.json`).
fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Runs `npm ci` in `tests/oidc` when `node_modules` is missing or older than the lockfile, once
/// per process and under `flock tests/oidc/.install.lock` across processes.
fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = project_dir();
        let script = "if [ ! -f node_modules/oidc-provider/package.json ] || \
                      [ ! -f node_modules/jose/package.json ] || \
                      [ package-lock.json -nt node_modules/.package-lock.json ]; then \
                      echo '[oidc] npm ci in tests/oidc' >&2; \
                      npm ci --no-audit --no-fund --loglevel=error >&2; fi";
        let output = Command::new("flock")
            .arg(dir.join(".install.lock"))
            .args(["bash", "-c", script])
            .current_dir(&dir)
            .output()
            .expect("flock and bash run (util-linux)");
        assert!(
            output.status.success(),
            "npm ci in {} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// An HTTP client that behaves like a browser for these tests: it keeps cookies and does not follow
/// redirects (each hop is for the test to see). Pass it to [`OidcProvider::authorize`].
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// Settings of an [`OidcProvider`] beyond its accounts and redirect URIs.
#[derive(Debug, Clone, Default)]
pub struct OidcOptions {
    /// Lifetime of the ID tokens (`exp - iat`); the provider's default is one hour.
    pub id_token_ttl: Option<Duration>,
    /// Where RP-initiated logout may send the browser back to.
    pub post_logout_redirect_uris: Vec<String>,
}

/// A running `tests/oidc/provider.mjs`, stopped (and its files removed) when dropped.
pub struct OidcProvider {
    settings: Settings,
    child: Child,
    http: reqwest::Client,
}

/// What `provider.mjs` is started with (the same at every restart but the key).
struct Settings {
    port: u16,
    client_id: String,
    client_secret: String,
    accounts: Value,
    redirect_uris: Vec<String>,
    options: OidcOptions,
    /// Holds the provider's log (stdout and stderr) and its signing key.
    dir: PathBuf,
}

impl Settings {
    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn keys_file(&self) -> PathBuf {
        self.dir.join("keys.json")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("provider.log")
    }

    /// `node tests/oidc/provider.mjs` with these settings, its output appended to the log file.
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("the provider's log file opens");
        let mut command = Command::new("node");
        command
            .arg(project_dir().join("provider.mjs"))
            .env("OIDC_PORT", self.port.to_string())
            .env("CLIENT_ID", &self.client_id)
            .env("CLIENT_SECRET", &self.client_secret)
            .env("REDIRECT_URIS", self.redirect_uris.join(","))
            .env("POST_LOGOUT_REDIRECT_URIS", self.options.post_logout_redirect_uris.join(","))
            .env("ACCOUNTS_JSON", self.accounts.to_string())
            .env("KEYS_FILE", self.keys_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(ttl) = self.options.id_token_ttl {
            command.env("ID_TOKEN_TTL_SECS", ttl.as_secs().max(1).to_string());
        }
        command.spawn().expect("node (20.12 or later) runs tests/oidc/provider.mjs")
    }
}

impl OidcProvider {
    /// Starts a provider on a free port with these accounts (`{"alice": {"name": …, "email": …,
    /// "groups": […]}}`; a login not in the map signs in with no groups) and one client allowed to
    /// come back to `redirect_uris`, and waits until its discovery document answers.
    pub async fn start(accounts: Value, redirect_uris: &[String]) -> Self {
        Self::start_with(accounts, redirect_uris, OidcOptions::default()).await
    }

    /// Like [`OidcProvider::start`], with [`OidcOptions`].
    pub async fn start_with(accounts: Value, redirect_uris: &[String], options: OidcOptions) -> Self {
        ensure_installed();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("stmt-oidc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = Settings {
            port,
            client_id: "statement-dashboard".to_owned(),
            client_secret: uuid::Uuid::new_v4().simple().to_string(),
            accounts,
            redirect_uris: redirect_uris.to_vec(),
            options,
            dir,
        };
        // Owned at once, so a failed start (a panic included) stops the process on drop.
        let mut provider = Self { child: settings.spawn(), settings, http: reqwest::Client::new() };
        provider.wait_ready().await;
        provider
    }

    /// The issuer, `http://127.0.0.1:PORT` (its discovery document is under
    /// `/.well-known/openid-configuration`).
    pub fn issuer(&self) -> String {
        self.settings.issuer()
    }

    /// The registered client's id.
    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// The registered client's secret (sent with HTTP Basic authentication).
    pub fn client_secret(&self) -> &str {
        &self.settings.client_secret
    }

    /// Stops the provider and starts it again on the same port with a new signing key (a new
    /// `kid`): a key rotation. Its sessions, codes and tokens are gone too (they live in memory).
    pub async fn restart(&mut self) {
        self.stop();
        std::fs::remove_file(self.settings.keys_file()).expect("the provider wrote its key file");
        self.child = self.settings.spawn();
        self.wait_ready().await;
    }

    /// Replaces the client's redirect URIs (for a relying party whose address is known only after
    /// the provider started): the provider restarts on the same port with the same signing key;
    /// its sessions are gone.
    pub async fn set_redirect_uris(&mut self, redirect_uris: &[String]) {
        self.settings.redirect_uris = redirect_uris.to_vec();
        self.stop();
        self.child = self.settings.spawn();
        self.wait_ready().await;
    }

    /// Makes the next token endpoint response carry an altered `id_token`: `forge` (same header and
    /// claims, signed by another key), `expired`, `nonce`, `audience`, `issuer` (each re-signed with
    /// the real key) or `none` (`alg: none`, no signature). The token after that is untouched.
    pub async fn tamper_next(&self, mode: &str) {
        let response = self
            .http
            .post(format!("{}/__test/tamper", self.issuer()))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .expect("the provider answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::NO_CONTENT, "tamper mode {mode}: {body}");
    }

    /// Drives the provider's side of a sign-in, as a browser would: from `authorize_url` (where the
    /// relying party sent the browser) through the login form, signing in as `login` with any
    /// password, to the first redirect that leaves the provider. Returns that URL (the relying
    /// party's redirect URI with `code` and `state`, or with `error`) without fetching it.
    ///
    /// `http` must keep cookies and not follow redirects ([`browser`]); with a provider session
    /// already in its cookies, the provider sends it straight back without a login page.
    pub async fn authorize(&self, http: &reqwest::Client, authorize_url: &str, login: &str) -> String {
        let issuer = Url::parse(&self.issuer()).unwrap();
        let mut url = Url::parse(authorize_url).expect("an absolute authorization URL");
        assert_eq!(url.origin(), issuer.origin(), "{authorize_url} is not on the provider");
        let mut signed_in = false;
        for _ in 0..10 {
            let response = http.get(url.clone()).send().await.expect("the provider answers");
            let (status, location) = (response.status(), location(&url, &response));
            let next = if let Some(location) = location {
                location
            } else if status == StatusCode::OK && !signed_in {
                let page = response.text().await.unwrap();
                signed_in = true;
                submit_login(http, &url, &page, login).await
            } else {
                let body = response.text().await.unwrap_or_default();
                panic!("{url} answered {status} without a redirect: {}", excerpt(&body));
            };
            if next.origin() != issuer.origin() {
                return next.into();
            }
            url = next;
        }
        panic!("the provider kept redirecting to itself (last {url})");
    }

    /// Waits until the discovery document answers; panics if the provider exits or takes longer
    /// than 20 s (its log is printed when it is dropped).
    async fn wait_ready(&mut self) {
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the OpenID provider at {} exited ({status})", self.issuer());
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the OpenID provider did not answer at {url}");
    }

    /// What the provider printed so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.settings.log_file()).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- OpenID provider log ({}) ---\n{}", self.issuer(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.settings.dir);
    }
}

/// Posts the login form on `page` (the provider's login page at `page_url`), as `login` with any
/// password, and returns where the answer redirects to.
async fn submit_login(http: &reqwest::Client, page_url: &Url, page: &str, login: &str) -> Url {
    static FORM: OnceLock<Regex> = OnceLock::new();
    static INPUT: OnceLock<Regex> = OnceLock::new();
    static ATTRIBUTE: OnceLock<Regex> = OnceLock::new();
    let form = FORM.get_or_init(|| Regex::new(r"(?s)<form\b([^>]*)>(.*?)</form>").unwrap());
    let input = INPUT.get_or_init(|| Regex::new(r"<input\b([^>]*)>").unwrap());
    let attribute = ATTRIBUTE.get_or_init(|| Regex::new(r#"([a-z-]+)="([^"]*)""#).unwrap());
    let attributes = |tag: &str| -> Vec<(String, String)> {
        attribute.captures_iter(tag).map(|c| (c[1].to_owned(), unescape(&c[2]))).collect()
    };
    let get = |attributes: &[(String, String)], name: &str| {
        attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
    };

    let login_form = form.captures_iter(page).find(|form| {
        input.captures_iter(&form[2]).any(|i| get(&attributes(&i[1]), "name").as_deref() == Some("login"))
    });
    let Some(login_form) = login_form else {
        panic!("no login form on {page_url}: {}", excerpt(page));
    };
    let action = get(&attributes(&login_form[1]), "action").unwrap_or_default();
    let action = page_url.join(&action).expect("a form action URL");
    let mut fields = Vec::new();
    for tag in input.captures_iter(&login_form[2]) {
        let tag = attributes(&tag[1]);
        let Some(name) = get(&tag, "name") else { continue };
        let value = match (name.as_str(), get(&tag, "type").as_deref()) {
            ("login", _) => login.to_owned(),
            (_, Some("password")) => "any password".to_owned(),
            _ => get(&tag, "value").unwrap_or_default(),
        };
        fields.push((name, value));
    }
    let response = http
        .post(action.clone())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&fields).unwrap())
        .send()
        .await
        .expect("the provider answers");
    let status = response.status();
    match location(&action, &response) {
        Some(next) => next,
        None => {
            let body = response.text().await.unwrap_or_default();
            panic!("signing in as {login} at {action} answered {status}: {}", excerpt(&body));
        }
    }
}

/// Where a redirect answer points, resolved against the URL that was asked.
fn location(asked: &Url, response: &reqwest::Response) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().expect("an ASCII Location");
    Some(asked.join(location).expect("a valid Location"))
}

/// The HTML escapes oidc-provider's templates write in attribute values, undone.
fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The start of a page, for a panic message.
fn excerpt(body: &str) -> &str {
    let end = body.char_indices().nth(2000).map_or(body.len(), |(i, _)| i);
    &body[..end]
}
