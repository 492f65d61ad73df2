//! The outbound HTTP client of webhook deliveries: it reaches only what the address policy
//! allows, follows no redirect, gives up after the attempt timeout and reads at most a few KiB
//! of an answer.
//!
//! Names are resolved by [`CheckedResolver`], which hands the connector only the addresses the
//! policy allows: the connection goes to an address that was checked, so a name that resolves
//! to a public address when checked and a private one when connecting (DNS rebinding) cannot
//! slip through. Address literals never reach a resolver; the delivery checks them itself
//! ([`Policy::check_url`]). No proxy from the environment is used (it would connect on our
//! behalf to whatever the URL names).

use std::{error::Error as _, sync::Arc, time::Duration};

use bytes::Bytes;
use shared::{
    config::WebhookConfig,
    webhooks::{
        address::{Policy, Refused},
        deliveries::{EXCERPT_BYTES, ErrorClass},
    },
};

/// Most bytes of an answer read (the rest is never read: the connection is closed).
pub(crate) const MAX_ANSWER_BYTES: usize = 4096;

/// The webhook settings and the client that sends deliveries.
#[derive(Debug)]
pub(crate) struct Webhooks {
    pub(crate) config: WebhookConfig,
    client: reqwest::Client,
}

/// What an endpoint answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// Its status code.
    pub(crate) status: u16,
    /// The first [`EXCERPT_BYTES`] of its body, as text.
    pub(crate) excerpt: String,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
#[error("{class}: {cause}")]
pub(crate) struct SendError {
    pub(crate) class: ErrorClass,
    #[source]
    pub(crate) cause: anyhow::Error,
}

impl Webhooks {
    pub(crate) fn new(config: &WebhookConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { policy: config.policy }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("statement-export-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { config: config.clone(), client })
    }

    /// POSTs `body` to `url` with `headers`. A 3xx is an answer here (not followed); reading
    /// stops after [`MAX_ANSWER_BYTES`].
    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        let mut request = self.client.post(url).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut read = Vec::new();
        // The status decides the outcome; a body that breaks off after it does not.
        while read.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        drop(response);
        read.truncate(EXCERPT_BYTES);
        // Postgres text cannot hold NUL: a binary answer must not make its attempt unrecordable.
        Ok(Answer { status, excerpt: String::from_utf8_lossy(&read).replace('\0', "\u{FFFD}") })
    }
}

/// The class of a failed request (the cause stays in the log, without the URL: a receiver's
/// URL may carry a token of its own in its path or query).
fn classify(error: reqwest::Error) -> SendError {
    let error = error.without_url();
    let refused = std::iter::successors(error.source(), |e| (*e).source())
        .find_map(|e| e.downcast_ref::<Refusal>())
        .map(|refusal| refusal.0.clone());
    let class = match refused {
        Some(Refused::Unresolved) => ErrorClass::Dns,
        Some(_) => ErrorClass::AddressRefused,
        None if error.is_timeout() => ErrorClass::Timeout,
        None if error.is_connect() => ErrorClass::Connect,
        None => ErrorClass::Request,
    };
    SendError { class, cause: error.into() }
}

/// A resolver that passes on only the addresses [`Policy`] allows, and fails when none is.
struct CheckedResolver {
    policy: Policy,
}

/// A name refused by [`CheckedResolver`] (found again in the request's error chain).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(Refused);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts in the URL's (or the scheme's) port.
            let allowed = policy
                .resolve(&host, 0)
                .await
                .map_err(|e| Box::new(Refusal(e)) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
