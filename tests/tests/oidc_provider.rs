//! The OpenID provider the sign-in tests use (`testkit::oidc`), on its own, without the API: a code
//! flow with PKCE S256, state and nonce through its login page, the ID token's claims, silent
//! sign-in on the provider's session (`prompt=none`), every tamper mode (signatures checked against
//! the provider's JWKS), key rotation on restart, the ID token lifetime option and redirect URIs set
//! after the start.

use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{Url, header::CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{
    StatusCode,
    oidc::{self, OidcOptions, OidcProvider},
};

/// Nothing listens there: the test reads the redirect, it never follows it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/callback";

fn accounts() -> Value {
    json!({
        "alice": {"name": "Alice Admin", "email": "alice@example.com", "groups": ["statement-admin"]},
    })
}

/// One authorization request as a relying party makes it.
struct Request {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl Request {
    fn new(discovery: &Value, client_id: &str, prompt: Option<&str>) -> Self {
        let random = || uuid::Uuid::new_v4().simple().to_string();
        let (state, nonce) = (random(), random());
        let verifier = format!("{}{}", random(), random());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", "openid profile email")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(prompt) = prompt {
            url.query_pairs_mut().append_pair("prompt", prompt);
        }
        Self { url: url.into(), state, nonce, verifier }
    }

    /// The code in the callback URL, after checking it answers this request.
    fn code(&self, callback: &str) -> String {
        assert!(callback.starts_with(&format!("{REDIRECT_URI}?")), "not the redirect URI: {callback}");
        let query = query(callback);
        assert_eq!(query.get("state"), Some(&self.state), "{callback}");
        query.get("code").cloned().unwrap_or_else(|| panic!("no code in {callback}"))
    }
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

async fn discovery(provider: &OidcProvider) -> Value {
    let url = format!("{}/.well-known/openid-configuration", provider.issuer());
    reqwest::get(url).await.unwrap().error_for_status().unwrap().json().await.unwrap()
}

/// Posts a code to the token endpoint as the client (client_secret_basic).
async fn token_request(
    provider: &OidcProvider,
    discovery: &Value,
    request: &Request,
    code: &str,
) -> reqwest::Response {
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &request.verifier),
    ];
    reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth(provider.client_id(), Some(provider.client_secret()))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).unwrap())
        .send()
        .await
        .unwrap()
}

/// Exchanges a code at the token endpoint and returns the ID token.
async fn redeem(provider: &OidcProvider, discovery: &Value, request: &Request, code: &str) -> String {
    let response = token_request(provider, discovery, request, code).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["id_token"].as_str().expect("an id_token").to_owned()
}

/// A token's header and claims, and whether it has a signature.
fn decode(token: &str) -> (Value, Value, bool) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {token}");
    let part =
        |i: usize| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[i]).unwrap()).unwrap() };
    (part(0), part(1), !parts[2].is_empty())
}

/// A silent sign-in on the provider session `browser` holds, and its ID token.
async fn silent_id_token(
    provider: &OidcProvider,
    discovery: &Value,
    browser: &reqwest::Client,
) -> (Request, String) {
    let request = Request::new(discovery, provider.client_id(), Some("none"));
    let callback = provider.authorize(browser, &request.url, "alice").await;
    let code = request.code(&callback);
    let token = redeem(provider, discovery, &request, &code).await;
    (request, token)
}

/// The provider's one published signing key.
async fn jwk(provider: &OidcProvider) -> Value {
    let jwks: Value =
        reqwest::get(format!("{}/jwks", provider.issuer())).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    jwks["keys"][0].clone()
}

async fn kid(provider: &OidcProvider) -> String {
    jwk(provider).await["kid"].as_str().unwrap().to_owned()
}

/// Whether `token`'s RS256 signature verifies with the RSA key `jwk`.
fn signature_verifies(token: &str, jwk: &Value) -> bool {
    let component = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (n, e) = (component("n"), component("e"));
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
        .is_ok()
}

#[tokio::test]
async fn a_code_flow_through_the_login_page_gives_an_id_token_with_the_accounts_claims() {
    let mut provider = OidcProvider::start(accounts(), &[REDIRECT_URI.to_owned()]).await;
    let discovery = discovery(&provider).await;
    assert_eq!(discovery["issuer"], json!(provider.issuer()));
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(discovery["response_types_supported"], json!(["code"]));
    assert_eq!(discovery["token_endpoint_auth_methods_supported"], json!(["client_secret_basic"]));
    assert!(discovery["end_session_endpoint"].is_string(), "RP-initiated logout: {discovery}");

    // Without a provider session, prompt=none comes back with login_required.
    let browser = oidc::browser();
    let request = Request::new(&discovery, provider.client_id(), Some("none"));
    let callback = provider.authorize(&browser, &request.url, "alice").await;
    assert_eq!(query(&callback).get("error").map(String::as_str), Some("login_required"), "{callback}");

    // Through the login page (no consent screen), back to the relying party with a code.
    let request = Request::new(&discovery, provider.client_id(), None);
    let page = browser.get(&request.url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "the authorization endpoint sends to the login page");
    let callback = provider.authorize(&browser, &request.url, "alice").await;
    let code = request.code(&callback);
    let token = redeem(&provider, &discovery, &request, &code).await;
    let (header, claims, signed) = decode(&token);
    let key = jwk(&provider).await;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key["kid"]);
    assert!(signed && signature_verifies(&token, &key), "{token}");
    assert_eq!(claims["iss"], json!(provider.issuer()));
    assert_eq!(claims["aud"], json!(provider.client_id()));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice Admin");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], json!(["statement-admin"]));
    assert_eq!(claims["nonce"], json!(request.nonce));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);

    // A code is good once.
    let again = token_request(&provider, &discovery, &request, &code).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    // The provider session signs in again silently; a login not in the accounts has no groups.
    let (request, token) = silent_id_token(&provider, &discovery, &browser).await;
    assert_eq!(decode(&token).1["nonce"], json!(request.nonce));
    let stranger = oidc::browser();
    let request = Request::new(&discovery, provider.client_id(), None);
    let callback = provider.authorize(&stranger, &request.url, "mallory").await;
    let token = redeem(&provider, &discovery, &request, &request.code(&callback)).await;
    let claims = decode(&token).1;
    assert_eq!(claims["sub"], "mallory");
    assert_eq!(claims["groups"], json!([]));
    assert!(claims.get("email").is_none(), "{claims}");

    // Each tamper mode alters the next ID token only.
    let (_, honest) = silent_id_token(&provider, &discovery, &browser).await;
    let (honest_header, _, _) = decode(&honest);
    assert!(signature_verifies(&honest, &key));
    for mode in ["forge", "expired", "nonce", "audience", "issuer", "none"] {
        provider.tamper_next(mode).await;
        let (request, token) = silent_id_token(&provider, &discovery, &browser).await;
        let (header, claims, signed) = decode(&token);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match mode {
            "none" => {
                assert_eq!(header["alg"], "none");
                assert!(!signed, "{token}");
            }
            _ => {
                assert_eq!(header, honest_header, "{mode}: the header is the real one");
                assert!(signed, "{mode}");
                // Only a forged token fails the published key; the others are re-signed with it.
                assert_eq!(signature_verifies(&token, &key), mode != "forge", "{mode}: {token}");
            }
        }
        assert_eq!(claims["nonce"] == json!(request.nonce), mode != "nonce", "{mode}: {claims}");
        assert_eq!(claims["aud"] == json!(provider.client_id()), mode != "audience", "{mode}: {claims}");
        assert_eq!(claims["iss"] == json!(provider.issuer()), mode != "issuer", "{mode}: {claims}");
        assert_eq!(claims["exp"].as_i64().unwrap() < now, mode == "expired", "{mode}: {claims}");
    }
    let (request, token) = silent_id_token(&provider, &discovery, &browser).await;
    let claims = decode(&token).1;
    assert_eq!(claims["nonce"], json!(request.nonce), "the tamper mode reset");
    assert!(signature_verifies(&token, &key));

    // A restart rotates the key (and forgets the provider's sessions).
    let before = kid(&provider).await;
    provider.restart().await;
    assert_ne!(kid(&provider).await, before);
    let request = Request::new(&discovery, provider.client_id(), Some("none"));
    let callback = provider.authorize(&browser, &request.url, "alice").await;
    assert_eq!(query(&callback).get("error").map(String::as_str), Some("login_required"), "{callback}");
}

#[tokio::test]
async fn the_id_token_lifetime_is_an_option_and_redirect_uris_can_be_set_after_the_start() {
    let options = OidcOptions { id_token_ttl: Some(Duration::from_secs(90)), ..OidcOptions::default() };
    let mut provider =
        OidcProvider::start_with(accounts(), &["http://127.0.0.1:9/elsewhere".to_owned()], options).await;
    let discovery = discovery(&provider).await;
    let request = Request::new(&discovery, provider.client_id(), None);
    let refused = oidc::browser().get(&request.url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "an unregistered redirect_uri");

    // The relying party's address is known now: same port, same key.
    let kid_before = kid(&provider).await;
    provider.set_redirect_uris(&[REDIRECT_URI.to_owned()]).await;
    assert_eq!(kid(&provider).await, kid_before);
    let callback = provider.authorize(&oidc::browser(), &request.url, "alice").await;
    let token = redeem(&provider, &discovery, &request, &request.code(&callback)).await;
    let claims = decode(&token).1;
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 90);
}
