//! Owns the product catalogue, defined once: the paid plans with their lookup keys, amounts and
//! intervals, which configured price is which tier, the seat bounds and the free-tier quotas.
//! `stripe setup`, preflight, the pages, checkout, quotes and sync all read it from here.

use serde::Serialize;

use super::access::{Feature, Tier, feature_allowed};

/// Seats a subscription can have (Checkout, the seats API and the portal all use these bounds).
pub const MIN_SEATS: i64 = 1;
pub const MAX_SEATS: i64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    /// Stripe's `recurring.interval` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

/// A Stripe product we sell.
pub struct Product {
    /// A fixed product id, so `stripe setup` finds it again.
    pub id: &'static str,
    pub name: &'static str,
    pub tier: Tier,
}

/// One of the four prices.
pub struct Plan {
    pub tier: Tier,
    pub interval: Interval,
    /// The Stripe lookup key `stripe setup` finds the price by.
    pub lookup_key: &'static str,
    /// The environment variable that names the price's id.
    pub env_var: &'static str,
    /// Per seat, in cents (USD).
    pub unit_amount: i64,
}

impl Plan {
    pub fn product(&self) -> &'static Product {
        match self.tier {
            Tier::Business => &PRODUCTS[1],
            _ => &PRODUCTS[0],
        }
    }
}

pub const PRODUCTS: [Product; 2] = [
    Product { id: "hydra_team", name: "Hydra Team", tier: Tier::Team },
    Product { id: "hydra_business", name: "Hydra Business", tier: Tier::Business },
];

/// Annual is 20% off twelve months: $192 = $20 × 12 × 0.8, $384 = $40 × 12 × 0.8.
pub const PLANS: [Plan; 4] = [
    Plan {
        tier: Tier::Team,
        interval: Interval::Month,
        lookup_key: "hydra_team_monthly",
        env_var: "STRIPE_TEAM_MONTHLY_PRICE_ID",
        unit_amount: 2000,
    },
    Plan {
        tier: Tier::Team,
        interval: Interval::Year,
        lookup_key: "hydra_team_annual",
        env_var: "STRIPE_TEAM_ANNUAL_PRICE_ID",
        unit_amount: 19200,
    },
    Plan {
        tier: Tier::Business,
        interval: Interval::Month,
        lookup_key: "hydra_business_monthly",
        env_var: "STRIPE_BUSINESS_MONTHLY_PRICE_ID",
        unit_amount: 4000,
    },
    Plan {
        tier: Tier::Business,
        interval: Interval::Year,
        lookup_key: "hydra_business_annual",
        env_var: "STRIPE_BUSINESS_ANNUAL_PRICE_ID",
        unit_amount: 38400,
    },
];

/// The plan of a tier at an interval (only Team and Business are on Stripe).
pub fn plan(tier: Tier, interval: Interval) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.tier == tier && p.interval == interval)
}

/// A Stripe Entitlements feature `stripe setup` creates for a gated capability.
pub struct StripeFeature {
    pub lookup_key: &'static str,
    pub name: &'static str,
    pub grants: Feature,
}

pub const STRIPE_FEATURES: [StripeFeature; 5] = [
    StripeFeature { lookup_key: "jira", name: "Jira integration", grants: Feature::Jira },
    StripeFeature { lookup_key: "audit_logs", name: "Audit logs", grants: Feature::AuditLogs },
    StripeFeature { lookup_key: "usage_reporting", name: "Usage reporting", grants: Feature::UsageReporting },
    StripeFeature {
        lookup_key: "priority_queue",
        name: "Priority fix queue",
        grants: Feature::PriorityQueue,
    },
    StripeFeature {
        lookup_key: "unlimited_repos",
        name: "Unlimited repositories",
        grants: Feature::ConnectedRepos,
    },
];

/// The Stripe features a product carries: exactly what its tier has by the tier table, so the
/// Entitlements Stripe reports and our table agree, and a feature can later be added to a plan
/// in Stripe alone.
pub fn product_features(tier: Tier) -> impl Iterator<Item = &'static StripeFeature> {
    STRIPE_FEATURES.iter().filter(move |f| feature_allowed(tier, f.grants, Some(i64::MAX), None).is_ok())
}

/// The four configured Stripe price ids, one per plan.
#[derive(Clone, Debug)]
pub struct Prices {
    pub team_monthly: String,
    pub team_annual: String,
    pub business_monthly: String,
    pub business_annual: String,
}

impl Prices {
    /// The configured id of `plan`.
    pub fn id_of(&self, plan: &Plan) -> &str {
        match (plan.tier, plan.interval) {
            (Tier::Business, Interval::Month) => &self.business_monthly,
            (Tier::Business, Interval::Year) => &self.business_annual,
            (_, Interval::Month) => &self.team_monthly,
            (_, Interval::Year) => &self.team_annual,
        }
    }

    /// The plan a configured price id sells; anything else is unknown (never guessed).
    pub fn plan_of(&self, price_id: &str) -> Option<&'static Plan> {
        PLANS.iter().find(|p| self.id_of(p) == price_id)
    }

    /// `price_id_to_tier`: only the four configured prices map to a tier.
    pub fn tier_of(&self, price_id: &str) -> Option<Tier> {
        self.plan_of(price_id).map(|p| p.tier)
    }

    /// Team to Business at the same interval; `None` when `price_id` is not a Team price.
    pub fn business_for(&self, price_id: &str) -> Option<&str> {
        let from = self.plan_of(price_id).filter(|p| p.tier == Tier::Team)?;
        plan(Tier::Business, from.interval).map(|to| self.id_of(to))
    }
}

/// The three metered workflow kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Fix,
    DocRun,
    LinearCycle,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Fix, Metric::DocRun, Metric::LinearCycle];

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Fix => "fix",
            Metric::DocRun => "doc_run",
            Metric::LinearCycle => "linear_cycle",
        }
    }

    /// What pages call it.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Fix => "Fixes",
            Metric::DocRun => "Doc runs",
            Metric::LinearCycle => "Linear cycles",
        }
    }

    /// The plural noun in a sentence ("5 free fixes").
    pub fn plural(self) -> &'static str {
        match self {
            Metric::Fix => "fixes",
            Metric::DocRun => "doc runs",
            Metric::LinearCycle => "Linear cycles",
        }
    }

    /// Free-tier allowance per 30-day window.
    pub fn free_limit(self) -> i64 {
        match self {
            Metric::Fix => 5,
            Metric::DocRun => 1,
            Metric::LinearCycle => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices {
            team_monthly: "p_tm".into(),
            team_annual: "p_ta".into(),
            business_monthly: "p_bm".into(),
            business_annual: "p_ba".into(),
        }
    }

    #[test]
    fn each_configured_price_is_its_plan_and_nothing_else_is_a_tier() {
        let p = prices();
        assert_eq!(p.tier_of("p_tm"), Some(Tier::Team));
        assert_eq!(p.tier_of("p_ba"), Some(Tier::Business));
        assert_eq!(p.tier_of("price_other"), None);
        assert_eq!(p.business_for("p_tm"), Some("p_bm"));
        assert_eq!(p.business_for("p_ta"), Some("p_ba"));
        assert_eq!(p.business_for("p_bm"), None);
        for plan in &PLANS {
            assert_eq!(p.plan_of(p.id_of(plan)).map(|q| q.lookup_key), Some(plan.lookup_key));
        }
    }

    #[test]
    fn each_stripe_feature_grants_the_feature_of_its_lookup_key_and_business_carries_them_all() {
        for f in &STRIPE_FEATURES {
            assert_eq!(f.grants.lookup_key(), Some(f.lookup_key));
        }
        assert_eq!(product_features(Tier::Business).count(), STRIPE_FEATURES.len());
        assert_eq!(product_features(Tier::Team).count(), 0, "Team has none of the gated features");
    }

    #[test]
    fn annual_is_twenty_percent_off_twelve_months() {
        for tier in [Tier::Team, Tier::Business] {
            let monthly = plan(tier, Interval::Month).map(|p| p.unit_amount).unwrap_or_default();
            let annual = plan(tier, Interval::Year).map(|p| p.unit_amount).unwrap_or_default();
            assert_eq!(annual, monthly * 12 * 8 / 10, "{tier:?}");
        }
    }
}
