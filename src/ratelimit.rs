//! Owns rate limits: per tenant on the endpoints that call Stripe (60 a minute by default), and
//! one process-wide budget for all Stripe calls, well under Stripe's own limits (25/s in test
//! mode, 100/s live). Fixed windows in memory: each replica counts its own calls.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::clock::Timestamp;

pub struct Limiter {
    limit: u32,
    window_secs: i64,
    counts: Mutex<HashMap<String, (Timestamp, u32)>>,
}

impl Limiter {
    pub fn new(limit: u32, window_secs: i64) -> Limiter {
        Limiter { limit, window_secs: window_secs.max(1), counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one call for `key`; over the limit: `Err` with the seconds to wait.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        let window = now - now.rem_euclid(self.window_secs);
        // A poisoned lock only means another request panicked mid-count; the counts are still usable.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            counts.retain(|_, (w, _)| *w == window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit {
            return Err((window + self.window_secs - now).max(1) as u64);
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_limit_then_refuses_until_the_next() {
        let l = Limiter::new(3, 60);
        for _ in 0..3 {
            assert!(l.check("t1", 120).is_ok());
        }
        assert!(matches!(l.check("t1", 150), Err(30)));
        assert!(l.check("t2", 150).is_ok(), "per key");
        assert!(l.check("t1", 180).is_ok(), "a new window");
    }
}
