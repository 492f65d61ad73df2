//! Single sign-on for the dashboard with an OpenID provider (`openidconnect`): the
//! authorization code flow with PKCE (S256), `state` and `nonce`, and the ID token's signature
//! (the provider's published keys), issuer, audience, expiry and nonce verified.
//!
//! The provider's metadata and keys come from its discovery document, fetched when first
//! needed and again after [`METADATA_TTL`], or at once when a token names a key that is not
//! known yet (the provider rotated its keys). Calls to the provider follow no redirect, give
//! up after [`PROVIDER_TIMEOUT`] and read at most [`MAX_PROVIDER_RESPONSE`] bytes.
//!
//! The person's dashboard role comes from a claim of the ID token (`OIDC_ROLES_CLAIM`, a
//! string or a list of strings, dots reaching into objects): the highest role one of whose
//! configured values it holds. None: no role, and no sign-in.

use std::time::{Duration, Instant};

use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, IdToken, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse as _,
    core::{
        CoreAuthPrompt, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
        CoreResponseType,
    },
    http,
    url::Url,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::{
    config::OidcSettings,
    operators::{DashboardRole, Identity},
};
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// How long the provider's metadata and keys are used before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Each call to the provider must be answered within this.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch of the metadata, sign-ins fail at once for this long rather than each
/// waiting on the provider again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
/// Most bytes read of one answer of the provider.
const MAX_PROVIDER_RESPONSE: usize = 1 << 20;

/// The dashboard's client of the OpenID provider.
#[derive(Debug)]
pub(crate) struct Oidc {
    settings: OidcSettings,
    redirect: RedirectUrl,
    post_logout: PostLogoutRedirectUrl,
    http: reqwest::Client,
    discovered: Mutex<Discovered>,
}

/// The provider's metadata as fetched last, and when a fetch last failed.
#[derive(Debug, Default)]
struct Discovered {
    metadata: Option<(ProviderMetadataWithLogout, Instant)>,
    failed_at: Option<Instant>,
}

/// A sign-in under way: what the browser keeps (in a cookie) between leaving for the provider
/// and coming back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    state: String,
    nonce: String,
    verifier: String,
}

impl Pending {
    /// The cookie value.
    pub(crate) fn to_cookie(&self) -> String {
        format!("{}.{}.{}", self.state, self.nonce, self.verifier)
    }

    /// Reads a cookie value written by [`Pending::to_cookie`].
    pub(crate) fn from_cookie(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let (state, nonce, verifier) = (parts.next()?, parts.next()?, parts.next()?);
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && token(state) && token(nonce) && token(verifier)).then(|| Self {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }

    /// Whether `state` (from the provider's redirect) is this sign-in's.
    pub(crate) fn state_matches(&self, state: &str) -> bool {
        crate::dashboard::constant_time_eq(self.state.as_bytes(), state.as_bytes())
    }
}

/// A person the provider vouched for.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub(crate) identity: Identity,
    /// Their dashboard role; `None` when the roles claim grants none.
    pub(crate) role: Option<DashboardRole>,
    /// What the roles claim held (for the refusal's audit row).
    pub(crate) claimed: Vec<String>,
    /// When the ID token expires: the session ends then at the latest.
    pub(crate) expires_at: OffsetDateTime,
    /// The ID token, for the provider's sign-out (`id_token_hint`).
    pub(crate) id_token: String,
}

/// Why single sign-on did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    /// The provider could not be reached, or answered with something unusable.
    #[error("identity provider: {0}")]
    Provider(String),
    /// The code exchange was refused (an unknown, reused or expired code, a wrong verifier).
    #[error("code exchange refused: {0}")]
    Exchange(String),
    /// The ID token did not verify.
    #[error("ID token refused: {0}")]
    Token(String),
}

/// Every claim of the ID token beyond the standard ones (the roles claim is among them).
#[derive(Debug, Clone, Deserialize, Serialize)]
struct OtherClaims {
    #[serde(flatten)]
    all: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type RoleIdToken =
    IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The token endpoint's answer, its ID token read with [`OtherClaims`].
type RoleTokenResponse = openidconnect::StandardTokenResponse<
    openidconnect::IdTokenFields<
        OtherClaims,
        openidconnect::EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    openidconnect::core::CoreTokenType,
>;

/// `CoreClient` with [`OtherClaims`], its endpoints as discovery sets them.
type RoleClient = openidconnect::Client<
    OtherClaims,
    openidconnect::core::CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    RoleTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// An error of the HTTP client the provider is called with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl Oidc {
    /// A client for `settings`; nothing is fetched until the first sign-in.
    pub(crate) fn new(settings: &OidcSettings, public_base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(Self {
            settings: settings.clone(),
            redirect: RedirectUrl::new(format!("{public_base_url}{}", crate::dashboard::SSO_CALLBACK_PATH))?,
            post_logout: PostLogoutRedirectUrl::new(format!(
                "{public_base_url}{}",
                crate::dashboard::SIGN_IN_PATH
            ))?,
            http,
            discovered: Mutex::default(),
        })
    }

    /// The sign-in button's label.
    pub(crate) fn provider_name(&self) -> &str {
        &self.settings.provider_name
    }

    /// The provider's metadata and keys: as fetched last unless `refresh` or they are older than
    /// [`METADATA_TTL`].
    async fn metadata(&self, refresh: bool) -> Result<ProviderMetadataWithLogout, OidcError> {
        let mut discovered = self.discovered.lock().await;
        if let Some((metadata, at)) = discovered.metadata.as_ref()
            && !refresh
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        if discovered.failed_at.is_some_and(|at| at.elapsed() < FAILURE_MEMORY) {
            return Err(OidcError::Provider("its discovery document failed moments ago".into()));
        }
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let http = self.http.clone();
        match ProviderMetadataWithLogout::discover_async(issuer, &move |r| send(http.clone(), r)).await {
            Ok(metadata) => {
                *discovered =
                    Discovered { metadata: Some((metadata.clone(), Instant::now())), failed_at: None };
                Ok(metadata)
            }
            Err(e) => {
                discovered.failed_at = Some(Instant::now());
                Err(OidcError::Provider(with_causes(&e)))
            }
        }
    }

    fn client(&self, metadata: ProviderMetadataWithLogout) -> RoleClient {
        openidconnect::Client::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.expose_secret().to_owned())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Where to send the browser to sign in, and what it must bring back. `silent` asks the
    /// provider not to show anything (`prompt=none`): it answers at once, with a code while its
    /// own session lasts and with `login_required` once it has ended.
    pub(crate) async fn begin(&self, silent: bool) -> Result<(Url, Pending), OidcError> {
        let client = self.client(self.metadata(false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if silent {
            request = request.add_prompt(CoreAuthPrompt::None);
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        };
        Ok((url, pending))
    }

    /// Exchanges the provider's `code` for an ID token, verifies it against `pending` and
    /// reads who it names and what role they have.
    pub(crate) async fn finish(&self, code: &str, pending: &Pending) -> Result<Authenticated, OidcError> {
        let client = self.client(self.metadata(false).await?);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&{
                let http = self.http.clone();
                move |r| send(http.clone(), r)
            })
            .await
            .map_err(|e| match e {
                // Not an answer: the provider is unreachable or slow.
                openidconnect::RequestTokenError::Request(_) => OidcError::Provider(with_causes(&e)),
                e => OidcError::Exchange(with_causes(&e)),
            })?;
        let token: RoleIdToken = response
            .id_token()
            .cloned()
            .ok_or_else(|| OidcError::Token("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = match token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // A key this client has not seen: the provider may have rotated its keys since
            // they were fetched. Fetch them again, once.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let client = self.client(self.metadata(true).await?);
                token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| OidcError::Token(e.to_string()))?
                    .clone()
            }
            Err(e) => return Err(OidcError::Token(e.to_string())),
        };
        let subject = claims.subject().as_str().to_owned();
        let email = claims.email().map(|e| e.as_str().to_owned());
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
            .or_else(|| email.clone())
            .unwrap_or_else(|| subject.clone());
        let claimed = claimed_values(&claims.additional_claims().all, &self.settings.roles_claim);
        let role = role_for(&claimed, &self.settings.role_values);
        let expires_at = OffsetDateTime::from_unix_timestamp(claims.expiration().timestamp())
            .map_err(|_| OidcError::Token("its expiry is out of range".into()))?;
        Ok(Authenticated {
            identity: Identity { issuer: claims.issuer().as_str().to_owned(), subject, name, email },
            role,
            claimed,
            expires_at,
            id_token: token.to_string(),
        })
    }

    /// Where to send the browser after signing out here, to end the provider's session too:
    /// its `end_session_endpoint`, if it has one (RP-initiated logout).
    pub(crate) async fn end_session_url(&self, id_token: Option<&str>) -> Option<Url> {
        let metadata = self.metadata(false).await.ok()?;
        let endpoint = metadata.additional_metadata().end_session_endpoint.clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.settings.client_id.clone()))
            .set_post_logout_redirect_uri(self.post_logout.clone());
        if let Some(token) = id_token.and_then(|t| t.parse::<RoleIdToken>().ok()) {
            request = request.set_id_token_hint(&token);
        }
        Some(request.http_get_url())
    }
}

/// One call to the provider (`http` follows no redirect and has a deadline), its answer read up
/// to [`MAX_PROVIDER_RESPONSE`] bytes.
async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request).map_err(|e| HttpError(e.to_string()))?;
    let mut response = http.execute(request).await.map_err(|e| HttpError(with_causes(&e)))?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(with_causes(&e)))? {
        if body.len() + chunk.len() > MAX_PROVIDER_RESPONSE {
            return Err(HttpError(format!("answer longer than {MAX_PROVIDER_RESPONSE} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let mut answer = http::Response::new(body);
    *answer.status_mut() = response.status();
    *answer.headers_mut() = std::mem::take(response.headers_mut());
    Ok(answer)
}

/// An error and its sources, on one line (for the log: never shown to the person).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The strings the claim `path` holds — a claim of that very name (`https://example.com/roles`),
/// else a dotted path into objects (`realm_access.roles`) —: one string, or the strings of a
/// list.
fn claimed_values(claims: &serde_json::Map<String, serde_json::Value>, path: &str) -> Vec<String> {
    let value = claims.get(path).or_else(|| {
        let mut parts = path.split('.');
        let mut value = parts.next().and_then(|first| claims.get(first));
        for part in parts {
            value = value.and_then(|v| v.get(part));
        }
        value
    });
    match value {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|i| i.as_str()).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

/// The highest role one of whose values was claimed.
fn role_for(claimed: &[String], role_values: &[(DashboardRole, Vec<String>)]) -> Option<DashboardRole> {
    role_values
        .iter()
        .filter(|(_, values)| values.iter().any(|v| claimed.contains(v)))
        .map(|(role, _)| *role)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<(DashboardRole, Vec<String>)> {
        vec![
            (DashboardRole::Viewer, vec!["statement-viewer".into()]),
            (DashboardRole::Operator, vec!["statement-operator".into(), "ops".into()]),
            (DashboardRole::Admin, vec!["statement-admin".into()]),
        ]
    }

    #[test]
    fn the_highest_claimed_role_wins_and_unknown_values_grant_nothing() {
        let claimed = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(role_for(&claimed(&["statement-viewer", "ops"]), &roles()), Some(DashboardRole::Operator));
        assert_eq!(role_for(&claimed(&["statement-admin"]), &roles()), Some(DashboardRole::Admin));
        assert_eq!(role_for(&claimed(&["Statement-Admin", "admins"]), &roles()), None);
        assert_eq!(role_for(&[], &roles()), None);
    }

    #[test]
    fn the_roles_claim_is_a_string_a_list_or_a_dotted_path() {
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"groups": ["a", 7, "b"], "role": "c", "realm_access": {"roles": ["d"]}, "https://x.example/roles": ["e"]}"#,
        )
        .unwrap();
        assert_eq!(claimed_values(&claims, "groups"), ["a", "b"]);
        assert_eq!(claimed_values(&claims, "role"), ["c"]);
        assert_eq!(claimed_values(&claims, "realm_access.roles"), ["d"]);
        assert!(claimed_values(&claims, "realm_access.missing").is_empty());
        assert!(claimed_values(&claims, "missing").is_empty());
        assert_eq!(claimed_values(&claims, "https://x.example/roles"), ["e"]);
    }

    #[test]
    fn pending_sign_ins_round_trip_through_their_cookie_and_nothing_else_does() {
        let pending = Pending { state: "s-1_x".into(), nonce: "n".into(), verifier: "v".into() };
        assert_eq!(Pending::from_cookie(&pending.to_cookie()), Some(pending.clone()));
        assert!(pending.state_matches("s-1_x"));
        assert!(!pending.state_matches("s-1_y"));
        for bad in ["", "a.b", "a.b.c.d", "a..c", "a.b.c;d", "a.b.c=="] {
            assert_eq!(Pending::from_cookie(bad), None, "{bad:?}");
        }
    }
}
