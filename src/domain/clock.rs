//! Owns "now": every piece of time logic reads this clock, so tests (and later the simulator's
//! test clocks) can move time instead of waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};

/// Unix seconds. Billing works at second resolution, as Stripe does.
pub type Timestamp = i64;

pub const DAY: i64 = 86_400;

/// Milliseconds of the wall clock a moment `ago` back: when something happened in real time,
/// whatever the business clock says (a manual or shifted clock moves billing time, not the order
/// in which this process did things).
pub fn wall_millis_ago(ago: std::time::Duration) -> i64 {
    Utc::now().timestamp_millis() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// A clock that only moves when told to; shared by clones.
    Manual(Arc<AtomicI64>),
    /// The system clock plus an offset that moves when told to: the demo runs in real time and
    /// jumps ahead (a renewal, a grace period) with the simulator's test clock.
    Shifted(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start: Timestamp) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Utc::now().timestamp(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
            Clock::Shifted(offset) => Utc::now().timestamp() + offset.load(Ordering::SeqCst),
        }
    }

    pub fn shifted() -> Clock {
        Clock::Shifted(Arc::new(AtomicI64::new(0)))
    }

    /// Moves a manual clock; the system clock cannot be moved and ignores this.
    pub fn advance(&self, seconds: i64) {
        if let Clock::Manual(t) | Clock::Shifted(t) = self {
            t.fetch_add(seconds, Ordering::SeqCst);
        }
    }

    pub fn set(&self, at: Timestamp) {
        match self {
            Clock::System => {}
            Clock::Manual(t) => t.store(at, Ordering::SeqCst),
            Clock::Shifted(offset) => offset.store(at - Utc::now().timestamp(), Ordering::SeqCst),
        }
    }
}

/// RFC 3339 in UTC, the form every API answer uses for times.
pub fn rfc3339(t: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn rfc3339_opt(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}

pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_past_moment_in_wall_clock_milliseconds_never_runs_ahead_of_it() {
        let before = Utc::now().timestamp_millis();
        let at = wall_millis_ago(Duration::from_millis(300));
        let after = Utc::now().timestamp_millis();
        assert!((before - 300..=after - 300).contains(&at), "{before} {at} {after}");
    }
}
