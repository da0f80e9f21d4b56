//! Owns the free-tier rules that do not depend on storage: the rolling 30-day window, the admit
//! rule (committed plus open units against the quota), and how a reservation's status is shown.

use super::catalogue::Metric;
use super::clock::{DAY, Timestamp};

pub const WINDOW_SECS: i64 = 30 * DAY;

/// The end of the window that contains `now`, given the stored one: a passed end moves on in
/// 30-day steps from its previous value (not from now) until it is in the future. `None` means
/// no metered run yet. The reset job's SQL applies the same formula to many rows at once.
pub fn current_window_end(stored: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    stored.map(|end| if end <= now { end + WINDOW_SECS * ((now - end) / WINDOW_SECS + 1) } else { end })
}

/// What a reserve on the free tier decides, once the tenant's counts are read under its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the quota: `used` counts committed runs plus open reservations.
    LimitReached {
        used: i64,
        limit: i64,
    },
}

/// The admit rule: a unit is granted while committed plus open units stay under the quota.
pub fn admit(metric: Metric, committed: i64, open: i64) -> Admit {
    let used = committed + open;
    let limit = metric.free_limit();
    if used >= limit { Admit::LimitReached { used, limit } } else { Admit::Yes }
}

/// A reservation's status as callers see it: an open one past its expiry is expired already
/// (the job that marks it only tidies).
pub fn shown_status(stored: &str, expires_at: Timestamp, now: Timestamp) -> &'static str {
    match stored {
        "open" if expires_at <= now => "expired",
        "committed" => "committed",
        "released" => "released",
        "expired" => "expired",
        _ => "open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_rolls_in_steps_from_its_previous_end() {
        let end = 1_000_000;
        assert_eq!(current_window_end(None, end), None);
        assert_eq!(current_window_end(Some(end), end - 1), Some(end));
        assert_eq!(current_window_end(Some(end), end), Some(end + WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + WINDOW_SECS - 1), Some(end + WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + WINDOW_SECS), Some(end + 2 * WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + 95 * DAY), Some(end + 4 * WINDOW_SECS));
    }

    #[test]
    fn open_reservations_count_against_the_quota() {
        assert_eq!(admit(Metric::Fix, 3, 1), Admit::Yes);
        assert_eq!(admit(Metric::Fix, 3, 2), Admit::LimitReached { used: 5, limit: 5 });
        assert_eq!(admit(Metric::DocRun, 0, 1), Admit::LimitReached { used: 1, limit: 1 });
        assert_eq!(shown_status("open", 10, 10), "expired");
        assert_eq!(shown_status("open", 11, 10), "open");
    }
}
