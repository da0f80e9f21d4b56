//! Owns rate limits: per tenant on the endpoints that call Stripe (60 a minute by default), and
//! one process-wide budget for all Stripe calls, well under Stripe's own limits (25/s in test
//! mode, 100/s live). Token buckets in memory: a key may burst up to its limit, then gets one
//! call per `window / limit`, so no boundary lets twice the limit through (a fixed window let 60
//! calls at :59 and 60 more at :00). Each replica counts its own calls.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::clock::Timestamp;

pub struct Limiter {
    limit: u32,
    window_secs: i64,
    /// Per key: (tokens left, when they were counted).
    buckets: Mutex<HashMap<String, (f64, Timestamp)>>,
}

impl Limiter {
    pub fn new(limit: u32, window_secs: i64) -> Limiter {
        Limiter { limit: limit.max(1), window_secs: window_secs.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Tokens a key regains per second.
    fn rate(&self) -> f64 {
        f64::from(self.limit) / self.window_secs as f64
    }

    /// Counts one call for `key`; over the limit: `Err` with the whole seconds to wait.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        let capacity = f64::from(self.limit);
        let rate = self.rate();
        // A poisoned lock only means another request panicked mid-count; the counts are still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them.
            buckets.retain(|_, (tokens, at)| *tokens + (now - *at).max(0) as f64 * rate < capacity);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 * rate).min(capacity);
        *at = now.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_limit_then_one_call_per_share_of_the_window() {
        let l = Limiter::new(3, 60);
        for _ in 0..3 {
            assert!(l.check("t1", 100).is_ok());
        }
        assert_eq!(l.check("t1", 100), Err(20), "one token per 20 s");
        assert!(l.check("t2", 100).is_ok(), "per key");
        assert_eq!(l.check("t1", 110), Err(10));
        assert!(l.check("t1", 120).is_ok(), "20 s later, one more");
        assert!(l.check("t1", 120).is_err());
    }

    #[test]
    fn no_window_boundary_lets_twice_the_limit_through() {
        let l = Limiter::new(60, 60);
        let admitted_at_52 = (0..60).filter(|_| l.check("t", 52).is_ok()).count();
        let admitted_at_60 = (0..60).filter(|_| l.check("t", 60).is_ok()).count();
        assert_eq!(admitted_at_52, 60);
        assert_eq!(admitted_at_60, 8, "only what 8 seconds earned");
    }
}
