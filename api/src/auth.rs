//! `Authorization: Bearer sk_…` authentication, cheap to refuse.
//!
//! A credential (an API key, a dashboard session cookie) costs a Postgres query only when it
//! must: a key found valid is trusted for [`KNOWN_KEY_TTL`] (so a revocation made anywhere, by
//! the CLI or another API process, takes effect on every process within 5 s without any
//! notification to lose); one found unknown is refused from memory for [`UNKNOWN_TTL`]; and a
//! client address whose lookups keep failing (`AUTH_FAILURES_PER_MINUTE`) is answered 429
//! without a lookup until its budget refills. Credentials found valid lately are exempt from
//! that budget, so a client behind the same proxy as an attacker keeps working.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem_openapi::{SecurityScheme, auth::Bearer};
use shared::{
    api_keys::{self, ApiKey},
    db::DbError,
};
use time::OffsetDateTime;

use crate::{AppState, client_addr::ClientAddr, error::ApiError, rate_limit::RateLimiter};

/// An API key (`sk_…`) sent as a bearer token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "sk_<32 base62><6 checksum>")]
pub struct BearerKey(Bearer);

/// How long a key found valid is used without asking Postgres again. Under 5 s, because the
/// lookup that found it started a little before it was remembered.
pub(crate) const KNOWN_KEY_TTL: Duration = Duration::from_secs(4);
/// How long a credential Postgres did not know is refused without asking again: one lookup per
/// 5 s however often it is repeated, and a key reactivated elsewhere works again within 5 s.
/// (Distinct unknown credentials are bounded by the address's failure budget instead.)
pub(crate) const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// How long a credential once found valid stays exempt from its address's failure budget.
const VALID_MEMORY: Duration = Duration::from_secs(3600);
/// Entries each map holds at most; when full, expired entries go, then everything.
const MAX_ENTRIES: usize = 100_000;
/// Failed lookups a minute from all addresses together, as a multiple of one address's budget.
const ALL_FAILURES_FACTOR: u32 = 20;

/// The SHA-256 of a presented credential: what the caches are keyed on (never the secret).
type Fingerprint = [u8; 32];

/// What this process remembers about credentials.
#[derive(Debug)]
pub(crate) struct CredentialCache {
    /// Keys found valid: the key, until when it is used as is, and until when the credential is
    /// exempt from the address budget.
    keys: Mutex<HashMap<Fingerprint, KnownKey>>,
    /// Session cookies found valid, until when they are exempt from the address budget.
    sessions: Mutex<HashMap<Fingerprint, Instant>>,
    /// Credentials found unknown, until when they are refused from memory.
    unknown: Mutex<HashMap<Fingerprint, Instant>>,
    /// Failed lookups per client address, and in all (a client with many addresses, an IPv6
    /// block say, is held by the second).
    failures: RateLimiter<ClientAddr>,
    all_failures: RateLimiter<()>,
    /// Lookups under way, one per credential: concurrent first uses of one credential wait for
    /// the first lookup's answer instead of each asking Postgres.
    in_flight: Mutex<HashMap<Fingerprint, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Clone)]
struct KnownKey {
    key: ApiKey,
    fresh_until: Instant,
    exempt_until: Instant,
}

/// What the cache says about a credential.
enum Cached {
    /// A valid key, checked within [`KNOWN_KEY_TTL`].
    Fresh(ApiKey),
    /// Found unknown within [`UNKNOWN_TTL`].
    Unknown,
    /// Valid lately but due for a check: looked up without spending the address's budget.
    Exempt,
    /// Never seen (or long ago): looked up on the address's budget.
    New,
}

impl CredentialCache {
    pub(crate) fn new(failures_per_minute: u32) -> Self {
        Self {
            keys: Mutex::default(),
            sessions: Mutex::default(),
            unknown: Mutex::default(),
            failures: RateLimiter::new(failures_per_minute, failures_per_minute),
            all_failures: RateLimiter::new(
                failures_per_minute.saturating_mul(ALL_FAILURES_FACTOR),
                failures_per_minute.saturating_mul(ALL_FAILURES_FACTOR),
            ),
            in_flight: Mutex::default(),
        }
    }

    fn key(&self, print: &Fingerprint) -> Cached {
        let now = Instant::now();
        if let Some(known) = self.keys.lock().expect("not poisoned").get(print) {
            if now < known.fresh_until {
                return Cached::Fresh(known.key.clone());
            }
            if now < known.exempt_until {
                return Cached::Exempt;
            }
        }
        self.unknown_or_new(print, now)
    }

    fn session(&self, print: &Fingerprint) -> Cached {
        let now = Instant::now();
        if self.sessions.lock().expect("not poisoned").get(print).is_some_and(|until| now < *until) {
            return Cached::Exempt;
        }
        self.unknown_or_new(print, now)
    }

    fn unknown_or_new(&self, print: &Fingerprint, now: Instant) -> Cached {
        match self.unknown.lock().expect("not poisoned").get(print) {
            Some(until) if now < *until => Cached::Unknown,
            _ => Cached::New,
        }
    }

    fn remember_key(&self, print: Fingerprint, key: ApiKey, checked_from: Instant) {
        let known = KnownKey {
            key,
            fresh_until: checked_from + KNOWN_KEY_TTL,
            exempt_until: checked_from + VALID_MEMORY,
        };
        insert_bounded(&mut self.keys.lock().expect("not poisoned"), print, known, |k| k.exempt_until);
    }

    fn remember_session(&self, print: Fingerprint) {
        let until = Instant::now() + VALID_MEMORY;
        insert_bounded(&mut self.sessions.lock().expect("not poisoned"), print, until, |u| *u);
    }

    fn remember_unknown(&self, print: Fingerprint) {
        self.keys.lock().expect("not poisoned").remove(&print);
        self.sessions.lock().expect("not poisoned").remove(&print);
        let until = Instant::now() + UNKNOWN_TTL;
        insert_bounded(&mut self.unknown.lock().expect("not poisoned"), print, until, |u| *u);
    }

    /// Makes every remembered key due for a check: called when this process changes a key (the
    /// dashboard deactivates or deletes one), so that the change applies here at once.
    pub(crate) fn forget_keys(&self) {
        let now = Instant::now();
        for known in self.keys.lock().expect("not poisoned").values_mut() {
            known.fresh_until = now;
        }
        // A reactivated key was unknown a moment ago.
        self.unknown.lock().expect("not poisoned").clear();
    }

    /// Notes that `last_used_at` is being refreshed, so the cached copy does not ask again.
    fn touched(&self, print: &Fingerprint) {
        if let Some(known) = self.keys.lock().expect("not poisoned").get_mut(print) {
            known.key.last_used_at = Some(OffsetDateTime::now_utc());
        }
    }

    /// Waits for this process's other lookup of the same credential, if any, to finish.
    async fn one_at_a_time(&self, print: Fingerprint) -> InFlight<'_> {
        let lock = self.in_flight.lock().expect("not poisoned").entry(print).or_default().clone();
        let guard = lock.lock_owned().await;
        InFlight { cache: self, print, _guard: guard }
    }

    /// Before a lookup the cache could not answer: a credential never seen takes a token of its
    /// client's failure budget and of the budget of all clients (`Ok(true)`), or is refused
    /// until they refill. Taken before the lookup, so parallel requests cannot overrun them.
    fn reserve(&self, cached: &Cached, client: ClientAddr) -> Result<bool, Duration> {
        if !matches!(cached, Cached::New) {
            return Ok(false);
        }
        let reserved = self
            .all_failures
            .check(())
            .and_then(|()| self.failures.check(client).inspect_err(|_| self.all_failures.refund(&())));
        reserved.map(|()| true).inspect_err(|_| {
            tracing::warn!(client = %client, "authentication refused unseen: too many failed lookups");
        })
    }

    /// After the lookup: the tokens are given back unless the credential turned out unknown.
    fn settle<T, E>(&self, reserved: bool, client: ClientAddr, found: &Result<Option<T>, E>) {
        if reserved && !matches!(found, Ok(None)) {
            self.failures.refund(&client);
            self.all_failures.refund(&());
        }
    }

    /// An authentication attempt outside credential lookups (a single sign-on callback): takes
    /// a token of the client's and of everyone's failure budget, or is refused until they refill.
    pub(crate) fn attempt(&self, client: ClientAddr) -> Result<(), Duration> {
        self.reserve(&Cached::New, client).map(|_| ())
    }

    /// The attempt succeeded: its tokens are given back.
    pub(crate) fn attempt_succeeded(&self, client: ClientAddr) {
        self.settle::<(), ()>(true, client, &Ok(Some(())));
    }

    /// A session this process just created is known valid (its first page must not wait on the
    /// address's budget).
    pub(crate) fn session_created(&self, token: &str) {
        self.remember_session(fingerprint(token));
    }
}

fn insert_bounded<V>(
    map: &mut HashMap<Fingerprint, V>,
    print: Fingerprint,
    value: V,
    until: impl Fn(&V) -> Instant,
) {
    if map.len() >= MAX_ENTRIES {
        let now = Instant::now();
        map.retain(|_, v| until(v) > now);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(print, value);
}

/// This process's lookup of one credential; the next may start when it is dropped.
struct InFlight<'a> {
    cache: &'a CredentialCache,
    print: Fingerprint,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.cache.in_flight.lock().expect("not poisoned");
        // Only the map and this guard (dropped just after this) hold it: nobody else is waiting.
        if in_flight.get(&self.print).is_some_and(|lock| Arc::strong_count(lock) == 2) {
            in_flight.remove(&self.print);
        }
    }
}

/// Why a key could not be looked up.
#[derive(Debug)]
pub enum LookupError {
    /// The client's failure budget is spent: retry after this many seconds.
    TooManyFailures(u64),
    Db(DbError),
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::TooManyFailures(seconds) => Self::TooManyFailures(seconds),
            LookupError::Db(e) => e.into(),
        }
    }
}

fn fingerprint(credential: &str) -> Fingerprint {
    // The SHA-256 keys are stored by; a session token's is the same function of its text.
    api_keys::hash_key(credential)
}

impl AppState {
    /// A pooled Postgres connection; a pool timeout or refused connection is 503.
    pub async fn db(&self) -> Result<deadpool_postgres::Object, ApiError> {
        Ok(self.pool.get().await.map_err(shared::db::DbError::from)?)
    }

    /// The active key behind the bearer token, per the rules at the top of this module. A
    /// token with a bad checksum is refused without any lookup. `last_used_at` is refreshed in
    /// the background at most once a minute.
    pub async fn authenticate(&self, auth: &BearerKey, client: ClientAddr) -> Result<ApiKey, ApiError> {
        let token = auth.0.token.trim();
        if !api_keys::is_well_formed(token) {
            return Err(ApiError::Unauthorized);
        }
        let key = self.active_key(token, client).await?.ok_or(ApiError::Unauthorized)?;
        if let Err(wait) = self.rate_limiter.check(key.id) {
            return Err(ApiError::RateLimited(wait.as_secs().max(1)));
        }
        let stale =
            key.last_used_at.is_none_or(|t| OffsetDateTime::now_utc() - t > time::Duration::minutes(1));
        if stale {
            self.credentials.touched(&fingerprint(token));
            let pool = self.pool.clone();
            let id = key.id;
            tokio::spawn(async move {
                if let Ok(db) = pool.get().await {
                    let _ = api_keys::touch(&db, id).await;
                }
            });
        }
        Ok(key)
    }

    /// The active key `token` (well formed) names, if any: from memory when it can be, else
    /// looked up, on the client's failure budget when it was never seen.
    pub async fn active_key(&self, token: &str, client: ClientAddr) -> Result<Option<ApiKey>, LookupError> {
        let print = fingerprint(token);
        let cache = &self.credentials;
        // Held until this lookup is done: the next one of this credential waits for it.
        let _turn: InFlight;
        let cached = match cache.key(&print) {
            Cached::Fresh(key) => return Ok(Some(key)),
            Cached::Unknown => return Ok(None),
            _ => {
                _turn = cache.one_at_a_time(print).await;
                // Answered meanwhile by the lookup this one waited for?
                match cache.key(&print) {
                    Cached::Fresh(key) => return Ok(Some(key)),
                    Cached::Unknown => return Ok(None),
                    cached => cached,
                }
            }
        };
        let reserved = cache
            .reserve(&cached, client)
            .map_err(|wait| LookupError::TooManyFailures(wait.as_secs().max(1)))?;
        let started = Instant::now();
        let found = async {
            let db = self.pool.get().await.map_err(DbError::from)?;
            api_keys::authenticate(&db, token).await
        }
        .await
        .map_err(LookupError::Db);
        cache.settle(reserved, client, &found);
        match &found {
            Ok(Some(key)) => cache.remember_key(print, key.clone(), started),
            Ok(None) => cache.remember_unknown(print),
            Err(_) => {}
        }
        found
    }

    /// The live session behind a dashboard session cookie, by `find`, or `None`: answered from
    /// memory for cookies found unknown lately, and, for cookies never seen, only while the
    /// client's failure budget lasts.
    pub async fn session<T, E>(
        &self,
        token: &str,
        client: ClientAddr,
        find: impl Future<Output = Result<Option<T>, E>>,
    ) -> Result<Option<T>, E> {
        let print = fingerprint(token);
        let cache = &self.credentials;
        if let Cached::Unknown = cache.session(&print) {
            return Ok(None);
        }
        let _turn = cache.one_at_a_time(print).await;
        let cached = cache.session(&print);
        if let Cached::Unknown = cached {
            return Ok(None);
        }
        let Ok(reserved) = cache.reserve(&cached, client) else {
            return Ok(None);
        };
        let found = find.await;
        cache.settle(reserved, client, &found);
        match &found {
            Ok(Some(_)) => cache.remember_session(print),
            Ok(None) => cache.remember_unknown(print),
            Err(_) => {}
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lookups_of_one_credential_take_turns_and_leave_nothing_behind() {
        let cache = CredentialCache::new(30);
        let print = fingerprint("sk_example");
        let first = cache.one_at_a_time(print).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), cache.one_at_a_time(print)).await.is_err(),
            "a second lookup of the same credential waits"
        );
        let other =
            tokio::time::timeout(Duration::from_millis(50), cache.one_at_a_time(fingerprint("sk_other")))
                .await
                .expect("another credential does not wait");
        drop(other);
        drop(first);
        let again = cache.one_at_a_time(print).await;
        drop(again);
        assert!(cache.in_flight.lock().unwrap().is_empty(), "no entry is left once nobody waits");
    }
}
