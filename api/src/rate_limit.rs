//! Token buckets, in memory: one per API key (requests), one per client address (failed
//! authentications). Each API process limits on its own, so behind N processes a client gets up
//! to N times the rate.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

#[derive(Debug)]
pub struct RateLimiter<K = Uuid> {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size: the burst a client may send at once.
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_minute` tokens a minute on average, bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self { rate: f64::from(per_minute) / 60.0, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() > 100_000 {
            // Forget idle clients rather than grow without bound (full buckets lose nothing).
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    /// Gives back a token taken by [`RateLimiter::check`] (what it paid for did not count).
    pub(crate) fn refund(&self, key: &K) {
        if let Some((tokens, _)) = self.buckets.lock().expect("not poisoned").get_mut(key) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_wait_for_tokens() {
        let limiter = RateLimiter::new(60, 3);
        let key = Uuid::new_v4();
        for _ in 0..3 {
            assert!(limiter.check(key).is_ok());
        }
        let wait = limiter.check(key).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(Uuid::new_v4()).is_ok(), "keys have their own buckets");
    }

    #[test]
    fn a_refunded_token_can_be_taken_again() {
        let limiter = RateLimiter::new(1, 1);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        limiter.refund(&"a");
        assert!(limiter.check("a").is_ok());
    }
}
