//! Owns the access rules: the access table as one pure function from a tenant's stored billing
//! state and a time to its *effective tier*, and the tier-feature matrix that follows from it.
//!
//! Nothing here reads a clock or a database, so every answer can be tested as a table, and jobs
//! that tidy stored columns can never change an answer.

use serde::Serialize;

use super::clock::{DAY, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    Team,
    Business,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Team => "team",
            Tier::Business => "business",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "free" => Some(Tier::Free),
            "team" => Some(Tier::Team),
            "business" => Some(Tier::Business),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }

    pub fn is_paid(self) -> bool {
        self != Tier::Free
    }
}

/// Why a tenant that had a plan is answered as free (the `reason` values of a 402 `subscription_required`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LapseReason {
    PastDueGraceEnded,
    Canceled,
    Unpaid,
    Incomplete,
    Paused,
    ManualPlanEnded,
}

impl LapseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LapseReason::PastDueGraceEnded => "past_due_grace_ended",
            LapseReason::Canceled => "canceled",
            LapseReason::Unpaid => "unpaid",
            LapseReason::Incomplete => "incomplete",
            LapseReason::Paused => "paused",
            LapseReason::ManualPlanEnded => "manual_plan_ended",
        }
    }
}

/// The stored columns the rules read. Subscription fields mirror Stripe's live state as the
/// webhook worker last wrote it; the manual plan is set only by an admin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BillingState {
    /// The tier of the subscription's price (`plan_tier` column).
    pub plan_tier: Option<Tier>,
    pub subscription_status: Option<String>,
    pub current_period_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<Timestamp>,
    pub cancellation_reason: Option<String>,
    pub grace_started_at: Option<Timestamp>,
    pub manual_plan_tier: Option<Tier>,
    pub manual_contract_ends_at: Option<Timestamp>,
}

impl BillingState {
    /// The manual plan (Enterprise or an admin override) while it holds: set, and before its
    /// contract end if it has one. It then decides the tier whatever Stripe says.
    pub fn manual_plan_in_force(&self, now: Timestamp) -> Option<Tier> {
        self.manual_plan_tier.filter(|_| self.manual_contract_ends_at.is_none_or(|end| now < end))
    }
}

/// The answer of the rules at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub tier: Tier,
    /// Set when the tenant had a plan and is answered as free because of it.
    pub reason: Option<LapseReason>,
    /// The tier that lapsed, with `reason`: what the tenant would have with its plan restored.
    pub lapsed_from: Option<Tier>,
    /// When the current tier ends unless something changes (cancellation, grace, contract).
    pub access_until: Option<Timestamp>,
    pub grace_ends_at: Option<Timestamp>,
}

impl Effective {
    fn tier(tier: Tier) -> Effective {
        Effective { tier, reason: None, lapsed_from: None, access_until: None, grace_ends_at: None }
    }

    fn free(reason: Option<LapseReason>) -> Effective {
        Effective { reason, ..Effective::tier(Tier::Free) }
    }

    fn until(tier: Tier, end: Timestamp, now: Timestamp, lapse: LapseReason) -> Effective {
        if now < end {
            Effective { access_until: Some(end), ..Effective::tier(tier) }
        } else {
            Effective::free(Some(lapse))
        }
    }
}

pub fn grace_ends_at(grace_started_at: Timestamp, grace_period_days: i64) -> Timestamp {
    grace_started_at + grace_period_days * DAY
}

/// The access table. `now` is the instant to judge at: callers pass the frozen
/// `billing_disabled_since` instead of the clock while the rollback switch is off.
pub fn effective_tier(state: &BillingState, now: Timestamp, grace_period_days: i64) -> Effective {
    if let Some(tier) = state.manual_plan_in_force(now) {
        return Effective { access_until: state.manual_contract_ends_at, ..Effective::tier(tier) };
    }
    let manual_ended = state.manual_plan_tier.is_some();
    let mut answer = subscription_tier(state, now, grace_period_days);
    if manual_ended && answer.tier == Tier::Free && answer.reason.is_none() {
        answer.reason = Some(LapseReason::ManualPlanEnded);
    }
    answer.lapsed_from = match answer.reason {
        None => None,
        Some(LapseReason::ManualPlanEnded) => state.manual_plan_tier,
        Some(_) => state.plan_tier,
    };
    answer
}

fn subscription_tier(state: &BillingState, now: Timestamp, grace_period_days: i64) -> Effective {
    let (Some(status), Some(tier)) = (state.subscription_status.as_deref(), state.plan_tier) else {
        return Effective::free(None);
    };
    // A stored tier of free (a job tidied it) still goes through the rules below, so a lapsed
    // subscription keeps its reason; where the rules grant "the tier", free is free.
    // A scheduled cancellation ends access at cancel_at or the period end, whichever is first.
    let scheduled_end = [state.cancel_at, state.current_period_end.filter(|_| state.cancel_at_period_end)]
        .into_iter()
        .flatten()
        .min();
    match status {
        "active" | "trialing" => match scheduled_end {
            Some(end) => Effective::until(tier, end, now, LapseReason::Canceled),
            None => Effective::tier(tier),
        },
        "past_due" => {
            let Some(started) = state.grace_started_at else {
                // past_due is always written together with its grace start; should a row ever
                // lack it, a paying customer keeps access until reconciliation fills it in.
                return match scheduled_end {
                    Some(end) => Effective::until(tier, end, now, LapseReason::Canceled),
                    None => Effective::tier(tier),
                };
            };
            let grace_end = grace_ends_at(started, grace_period_days);
            if now >= grace_end {
                return Effective::free(Some(LapseReason::PastDueGraceEnded));
            }
            match scheduled_end {
                Some(end) if end <= grace_end => Effective::until(tier, end, now, LapseReason::Canceled),
                _ => Effective {
                    access_until: Some(grace_end),
                    grace_ends_at: Some(grace_end),
                    ..Effective::tier(tier)
                },
            }
        }
        "canceled" => {
            if state.cancellation_reason.as_deref() == Some("payment_failed") {
                return Effective::free(Some(LapseReason::Canceled));
            }
            match state.current_period_end {
                Some(end) => Effective::until(tier, end, now, LapseReason::Canceled),
                None => Effective::free(Some(LapseReason::Canceled)),
            }
        }
        "unpaid" => Effective::free(Some(LapseReason::Unpaid)),
        "incomplete" | "incomplete_expired" => Effective::free(Some(LapseReason::Incomplete)),
        "paused" => Effective::free(Some(LapseReason::Paused)),
        // An unknown status is never guessed into access.
        _ => Effective::free(None),
    }
}

/// The features `GET /api/tenants/{id}/access` answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Workflows,
    Jira,
    AuditLogs,
    UsageReporting,
    PriorityQueue,
    Sso,
    Rbac,
    Vpc,
    ConnectedRepos,
    Seats,
}

impl Feature {
    pub const ALL: [&'static str; 10] = [
        "workflows",
        "jira",
        "audit_logs",
        "usage_reporting",
        "priority_queue",
        "sso",
        "rbac",
        "vpc",
        "connected_repos",
        "seats",
    ];

    pub fn parse(s: &str) -> Option<Feature> {
        Some(match s {
            "workflows" => Feature::Workflows,
            "jira" => Feature::Jira,
            "audit_logs" => Feature::AuditLogs,
            "usage_reporting" => Feature::UsageReporting,
            "priority_queue" => Feature::PriorityQueue,
            "sso" => Feature::Sso,
            "rbac" => Feature::Rbac,
            "vpc" => Feature::Vpc,
            "connected_repos" => Feature::ConnectedRepos,
            "seats" => Feature::Seats,
            _ => return None,
        })
    }

    /// Whether the feature's answer depends on `count`.
    pub fn needs_count(self) -> bool {
        matches!(self, Feature::ConnectedRepos | Feature::Seats)
    }

    /// The lookup key of the Stripe Entitlements feature that grants it (`connected_repos`:
    /// `unlimited_repos`); `None` for what is never gated (workflows, seats).
    pub fn lookup_key(self) -> Option<&'static str> {
        Some(match self {
            Feature::Jira => "jira",
            Feature::AuditLogs => "audit_logs",
            Feature::UsageReporting => "usage_reporting",
            Feature::PriorityQueue => "priority_queue",
            Feature::Sso => "sso",
            Feature::Rbac => "rbac",
            Feature::Vpc => "vpc",
            Feature::ConnectedRepos => "unlimited_repos",
            Feature::Workflows | Feature::Seats => return None,
        })
    }
}

/// Team's cap on connected repositories.
pub const TEAM_REPO_LIMIT: i64 = 5;

/// Why a feature is refused, when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The effective tier does not include it; `required_tier` would.
    NotInPlan { required_tier: Tier },
    /// Team's repository cap.
    RepoLimit { limit: i64 },
    /// More developers than seats bought.
    SeatLimit { seats: i64 },
}

/// The tier-feature matrix. `count` is required for `connected_repos` and `seats` (callers
/// validate that); `seat_count` is the quantity bought.
pub fn feature_allowed(
    tier: Tier,
    feature: Feature,
    count: Option<i64>,
    seat_count: Option<i64>,
) -> Result<(), Refusal> {
    let needs = |required_tier: Tier| {
        if tier >= required_tier { Ok(()) } else { Err(Refusal::NotInPlan { required_tier }) }
    };
    match feature {
        Feature::Workflows => Ok(()),
        Feature::Jira | Feature::AuditLogs | Feature::UsageReporting | Feature::PriorityQueue => {
            needs(Tier::Business)
        }
        Feature::Sso | Feature::Rbac | Feature::Vpc => needs(Tier::Enterprise),
        Feature::ConnectedRepos => match (tier, count) {
            (Tier::Team, Some(n)) if n > TEAM_REPO_LIMIT => {
                Err(Refusal::RepoLimit { limit: TEAM_REPO_LIMIT })
            }
            _ => Ok(()),
        },
        // Seats only inform prompts; a plan without a stored quantity (free, manual) has no cap.
        Feature::Seats => match (tier, count, seat_count) {
            (Tier::Team | Tier::Business, Some(n), Some(seats)) if n > seats => {
                Err(Refusal::SeatLimit { seats })
            }
            _ => Ok(()),
        },
    }
}

/// One access answer for a feature: what `GET /api/tenants/{id}/access` reports and what
/// `http::gate::RequireFeature` enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// A lapse reason (`past_due_grace_ended`, …) when the lost plan had the feature, else
    /// `feature_not_in_plan`, `repo_limit_reached` or `seat_limit_reached`.
    pub reason: Option<&'static str>,
    pub required_tier: Option<Tier>,
    /// True when `reason` is a lapse: the answer is `subscription_required`.
    pub lapsed: bool,
}

/// `granted` are the lookup keys of the features Stripe's Entitlements give the tenant: on a paid
/// tier they add to the tier table (a plan can gain a feature from Stripe without a deploy), and
/// never take one away (a late or empty entitlement event cannot remove what the tier has).
pub fn verdict(
    effective: &Effective,
    feature: Feature,
    count: Option<i64>,
    seat_count: Option<i64>,
    granted: &[String],
) -> Verdict {
    let by_stripe =
        effective.tier.is_paid() && feature.lookup_key().is_some_and(|key| granted.iter().any(|g| g == key));
    let allowed =
        if by_stripe { Ok(()) } else { feature_allowed(effective.tier, feature, count, seat_count) };
    match allowed {
        Ok(()) => Verdict { allowed: true, reason: None, required_tier: None, lapsed: false },
        Err(Refusal::NotInPlan { required_tier }) => {
            // A tenant that lost its plan is told why; others, which plan has the feature.
            let lapse = effective.reason.filter(|_| {
                effective.lapsed_from.is_some_and(|t| feature_allowed(t, feature, count, seat_count).is_ok())
            });
            Verdict {
                allowed: false,
                reason: Some(lapse.map_or("feature_not_in_plan", LapseReason::as_str)),
                required_tier: Some(required_tier),
                lapsed: lapse.is_some(),
            }
        }
        Err(Refusal::RepoLimit { .. }) => Verdict {
            allowed: false,
            reason: Some("repo_limit_reached"),
            required_tier: Some(Tier::Business),
            lapsed: false,
        },
        Err(Refusal::SeatLimit { .. }) => {
            Verdict { allowed: false, reason: Some("seat_limit_reached"), required_tier: None, lapsed: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_800_000_000;
    const GRACE_DAYS: i64 = 7;

    fn sub(tier: Tier, status: &str) -> BillingState {
        BillingState {
            plan_tier: Some(tier),
            subscription_status: Some(status.into()),
            current_period_end: Some(NOW + 10 * DAY),
            ..BillingState::default()
        }
    }

    fn with(mut s: BillingState, f: impl FnOnce(&mut BillingState)) -> BillingState {
        f(&mut s);
        s
    }

    #[test]
    fn the_access_table_holds_row_by_row() {
        use LapseReason::*;
        use Tier::*;
        let grace_start = NOW - 3 * DAY;
        let grace_end = grace_start + GRACE_DAYS * DAY;
        let period_end = NOW + 10 * DAY;
        // (name, state, time, expected tier, reason, access_until, grace_ends_at)
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            &str,
            BillingState,
            Timestamp,
            Tier,
            Option<LapseReason>,
            Option<i64>,
            Option<i64>,
        )> = vec![
            ("no subscription", BillingState::default(), NOW, Free, None, None, None),
            ("active team", sub(Team, "active"), NOW, Team, None, None, None),
            ("trialing business", sub(Business, "trialing"), NOW, Business, None, None, None),
            (
                "past_due inside grace",
                with(sub(Team, "past_due"), |s| s.grace_started_at = Some(grace_start)),
                NOW,
                Team,
                None,
                Some(grace_end),
                Some(grace_end),
            ),
            (
                "past_due one second before grace end",
                with(sub(Team, "past_due"), |s| s.grace_started_at = Some(grace_start)),
                grace_end - 1,
                Team,
                None,
                Some(grace_end),
                Some(grace_end),
            ),
            (
                "past_due exactly at grace end",
                with(sub(Team, "past_due"), |s| s.grace_started_at = Some(grace_start)),
                grace_end,
                Free,
                Some(PastDueGraceEnded),
                None,
                None,
            ),
            (
                "cancel at period end, before the end",
                with(sub(Business, "active"), |s| s.cancel_at_period_end = true),
                period_end - 1,
                Business,
                None,
                Some(period_end),
                None,
            ),
            (
                "cancel at period end, exactly at the end",
                with(sub(Business, "active"), |s| s.cancel_at_period_end = true),
                period_end,
                Free,
                Some(Canceled),
                None,
                None,
            ),
            (
                "cancel_at earlier than the period end wins",
                with(sub(Team, "active"), |s| s.cancel_at = Some(NOW + DAY)),
                NOW + DAY,
                Free,
                Some(Canceled),
                None,
                None,
            ),
            (
                "cancel_at before it comes",
                with(sub(Team, "active"), |s| s.cancel_at = Some(NOW + DAY)),
                NOW,
                Team,
                None,
                Some(NOW + DAY),
                None,
            ),
            (
                "canceled for non-payment: free at once",
                with(sub(Team, "canceled"), |s| s.cancellation_reason = Some("payment_failed".into())),
                NOW,
                Free,
                Some(Canceled),
                None,
                None,
            ),
            (
                "canceled by request: until period end",
                with(sub(Team, "canceled"), |s| {
                    s.cancellation_reason = Some("cancellation_requested".into())
                }),
                period_end - 1,
                Team,
                None,
                Some(period_end),
                None,
            ),
            (
                "canceled by request: at period end",
                with(sub(Team, "canceled"), |s| {
                    s.cancellation_reason = Some("cancellation_requested".into())
                }),
                period_end,
                Free,
                Some(Canceled),
                None,
                None,
            ),
            ("unpaid", sub(Team, "unpaid"), NOW, Free, Some(Unpaid), None, None),
            ("incomplete", sub(Team, "incomplete"), NOW, Free, Some(Incomplete), None, None),
            ("incomplete_expired", sub(Team, "incomplete_expired"), NOW, Free, Some(Incomplete), None, None),
            ("paused", sub(Business, "paused"), NOW, Free, Some(Paused), None, None),
            ("unknown status never grants", sub(Business, "mystery"), NOW, Free, None, None, None),
            (
                "manual enterprise overrides a lapsed subscription",
                with(sub(Team, "unpaid"), |s| s.manual_plan_tier = Some(Enterprise)),
                NOW,
                Enterprise,
                None,
                None,
                None,
            ),
            (
                "manual plan before its contract end",
                with(BillingState::default(), |s| {
                    s.manual_plan_tier = Some(Enterprise);
                    s.manual_contract_ends_at = Some(NOW + DAY);
                }),
                NOW + DAY - 1,
                Enterprise,
                None,
                Some(NOW + DAY),
                None,
            ),
            (
                "manual plan exactly at its contract end",
                with(BillingState::default(), |s| {
                    s.manual_plan_tier = Some(Enterprise);
                    s.manual_contract_ends_at = Some(NOW + DAY);
                }),
                NOW + DAY,
                Free,
                Some(ManualPlanEnded),
                None,
                None,
            ),
            (
                "manual plan ended falls back to an active subscription",
                with(sub(Team, "active"), |s| {
                    s.manual_plan_tier = Some(Enterprise);
                    s.manual_contract_ends_at = Some(NOW - 1);
                }),
                NOW,
                Team,
                None,
                None,
                None,
            ),
            (
                "past_due with cancellation inside grace ends at the cancellation",
                with(sub(Team, "past_due"), |s| {
                    s.grace_started_at = Some(grace_start);
                    s.cancel_at = Some(NOW + DAY);
                }),
                NOW,
                Team,
                None,
                Some(NOW + DAY),
                None,
            ),
        ];
        for (name, state, at, tier, reason, until, grace) in rows {
            let got = effective_tier(&state, at, GRACE_DAYS);
            let lapsed_from = match reason {
                None => None,
                Some(ManualPlanEnded) => state.manual_plan_tier,
                Some(_) => state.plan_tier,
            };
            assert_eq!(
                got,
                Effective { tier, reason, lapsed_from, access_until: until, grace_ends_at: grace },
                "row {name:?}"
            );
        }
    }

    #[test]
    fn grace_length_follows_the_setting() {
        let state = with(sub(Tier::Team, "past_due"), |s| s.grace_started_at = Some(NOW));
        assert_eq!(effective_tier(&state, NOW + 3 * DAY, 3).tier, Tier::Free);
        assert_eq!(effective_tier(&state, NOW + 3 * DAY, 4).tier, Tier::Team);
    }

    #[test]
    fn stripe_entitlements_add_features_to_paid_tiers_and_never_remove_any() {
        use Feature::*;
        let at = |tier| Effective {
            tier,
            reason: None,
            lapsed_from: None,
            access_until: None,
            grace_ends_at: None,
        };
        let keys = |ks: &[&str]| ks.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        // Granted by Stripe to a Team tenant: allowed though the tier table says Business.
        assert!(verdict(&at(Tier::Team), Jira, None, None, &keys(&["jira"])).allowed);
        assert!(
            verdict(&at(Tier::Team), ConnectedRepos, Some(40), None, &keys(&["unlimited_repos"])).allowed
        );
        assert!(!verdict(&at(Tier::Team), ConnectedRepos, Some(40), None, &keys(&["jira"])).allowed);
        // Nothing granted (a late or empty summary): the tier table still holds for Business.
        for f in [Jira, AuditLogs, UsageReporting, PriorityQueue] {
            assert!(verdict(&at(Tier::Business), f, None, None, &[]).allowed, "{f:?}");
        }
        // Free tenants get nothing from a stale grant: features follow a paid tier only.
        let lapsed = Effective::free(Some(LapseReason::Canceled));
        assert!(!verdict(&lapsed, Jira, None, None, &keys(&["jira"])).allowed);
        assert!(!verdict(&at(Tier::Free), Jira, None, None, &keys(&["jira"])).allowed);
        // Workflows and seats are never a Stripe feature.
        assert_eq!(Workflows.lookup_key(), None);
        assert_eq!(Seats.lookup_key(), None);
    }

    #[test]
    fn the_feature_matrix_holds() {
        use Feature::*;
        use Tier::*;
        let expect = |tier, feature, count, ok: bool| {
            assert_eq!(
                feature_allowed(tier, feature, count, Some(3)).is_ok(),
                ok,
                "{tier:?} {feature:?} {count:?}"
            );
        };
        for tier in [Free, Team, Business, Enterprise] {
            expect(tier, Workflows, None, true);
            let business = tier >= Business;
            for f in [Jira, AuditLogs, UsageReporting, PriorityQueue] {
                expect(tier, f, None, business);
            }
            for f in [Sso, Rbac, Vpc] {
                expect(tier, f, None, tier == Enterprise);
            }
        }
        expect(Free, ConnectedRepos, Some(50), true);
        expect(Team, ConnectedRepos, Some(5), true);
        expect(Team, ConnectedRepos, Some(6), false);
        expect(Business, ConnectedRepos, Some(500), true);
        expect(Team, Seats, Some(3), true);
        expect(Team, Seats, Some(4), false);
        expect(Enterprise, Seats, Some(400), true);
        assert_eq!(
            feature_allowed(Team, Jira, None, None),
            Err(Refusal::NotInPlan { required_tier: Business })
        );
        assert_eq!(
            feature_allowed(Team, ConnectedRepos, Some(6), None),
            Err(Refusal::RepoLimit { limit: 5 })
        );
    }
}
