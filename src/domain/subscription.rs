//! Owns Stripe's subscription statuses as one enum, with the rule of which ones are live (Stripe
//! may still charge them) and the retry schedule our database queues share.

use super::clock::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Incomplete,
    IncompleteExpired,
    Paused,
    Canceled,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Active,
        SubscriptionStatus::Trialing,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Paused,
        SubscriptionStatus::Canceled,
    ];

    pub fn parse(s: &str) -> Option<SubscriptionStatus> {
        SubscriptionStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Canceled => "canceled",
        }
    }

    /// Not ended: Stripe may still charge it (any status but canceled and incomplete_expired,
    /// so unpaid and paused are live too).
    pub fn is_live(self) -> bool {
        !matches!(self, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired)
    }

    /// Paid up: what decides between two live subscriptions of one customer.
    pub fn is_paid_up(self) -> bool {
        matches!(self, SubscriptionStatus::Active | SubscriptionStatus::Trialing)
    }
}

/// The live rule for a stored or Stripe-sent status string; a status Stripe adds later counts
/// as live, so we never open a second subscription beside one we cannot read.
pub fn is_live_status(status: &str) -> bool {
    SubscriptionStatus::parse(status).is_none_or(SubscriptionStatus::is_live)
}

/// The retry schedule of a database queue (Stripe events, billing emails): doubling delays from
/// `first_secs`, capped, then given up after `max_attempts`.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub first_secs: i64,
    pub cap_secs: i64,
    pub max_attempts: i64,
}

impl Retry {
    /// When to try again after `attempts` tries failed, or `None` when it is time to give up.
    pub fn next_attempt(self, attempts: i64, now: Timestamp) -> Option<Timestamp> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.clamp(1, 20) as u32 - 1;
        Some(now + self.first_secs.saturating_mul(2_i64.saturating_pow(doublings)).min(self.cap_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canceled_and_incomplete_expired_are_over() {
        let live: Vec<_> = SubscriptionStatus::ALL.into_iter().filter(|s| s.is_live()).collect();
        assert_eq!(live.len(), 6);
        assert!(!is_live_status("canceled") && !is_live_status("incomplete_expired"));
        assert!(is_live_status("unpaid") && is_live_status("paused") && is_live_status("a_new_status"));
    }

    #[test]
    fn retries_double_up_to_the_cap_then_stop() {
        let r = Retry { first_secs: 10, cap_secs: 3600, max_attempts: 8 };
        assert_eq!(r.next_attempt(1, 0), Some(10));
        assert_eq!(r.next_attempt(2, 0), Some(20));
        assert_eq!(r.next_attempt(7, 0), Some(640));
        assert_eq!(r.next_attempt(8, 0), None);
        let capped = Retry { first_secs: 60, cap_secs: 300, max_attempts: 100 };
        assert_eq!(capped.next_attempt(50, 0), Some(300));
    }
}
