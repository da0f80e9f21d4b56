//! Owns configuration: the README's environment variables, parsed and checked all at once so a
//! bad deployment is told every problem in one go, with secrets that never print. Commands that
//! run before the service is set up (`token`, `stripe setup`) read only their few variables, through
//! readers here that share each variable's parsing with [`Config::from_vars`]. No other module
//! reads or checks these variables (but `RUST_LOG`, which the log filter reads itself).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// A value that must never reach a log, an error or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The only way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

pub use crate::domain::catalogue::Prices;

#[derive(Clone, Debug)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub publishable_key: Option<String>,
    /// Several during a secret roll; a signature matching any of them is accepted.
    pub webhook_secrets: Vec<Secret>,
    pub prices: Prices,
    pub portal_config_id: Option<String>,
    pub api_base: String,
    /// The process-wide budget of Stripe calls per second (Stripe allows 25/s in test mode and
    /// 100/s live; the default stays well under).
    pub calls_per_second: u32,
    /// How long one Stripe call may take before it counts as failed (and is retried under its
    /// Idempotency-Key).
    pub timeout: std::time::Duration,
}

impl StripeConfig {
    pub fn is_live(&self) -> bool {
        is_live_key(self.secret_key.expose())
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub bind: SocketAddr,
    /// Base of every URL we hand out, without a trailing slash.
    pub public_url: String,
    pub billing_enabled: bool,
    pub grace_period_days: i64,
    pub auth_secret: Secret,
    pub service_tokens: Vec<Secret>,
    /// Empty: the admin API answers 401 to everyone.
    pub admin_tokens: Vec<Secret>,
    pub stripe: StripeConfig,
    pub smtp_url: Option<Secret>,
    /// The billing emails' sender (`EMAIL_FROM`); `no-reply@` the public host unless set.
    pub email_from: String,
    /// How long an unsettled usage reservation holds its unit.
    pub reservation_ttl_secs: i64,
    /// Set only by `hydra-billing demo`: pages link to the demo's controls. No variable sets it.
    pub demo: bool,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://hydra-billing.db";
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_RESERVATION_TTL_SECS: i64 = 15 * 60;
const MIN_TOKEN_BYTES: usize = 32;

fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

/// Every problem found, one line each, named after the variable.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration is incomplete or malformed:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables from a map so tests need not touch the process environment.
struct Vars<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<String>,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn required(&mut self, name: &str) -> String {
        match self.get(name) {
            Some(v) => v.to_owned(),
            None => {
                self.errors.push(format!("{name} is required"));
                String::new()
            }
        }
    }

    /// A comma-separated list of bearer secrets, each long enough to resist guessing.
    fn tokens(&mut self, name: &str, required: bool) -> Vec<Secret> {
        let Some(raw) = self.get(name) else {
            if required {
                self.errors.push(format!("{name} is required"));
            }
            return Vec::new();
        };
        let tokens: Vec<Secret> =
            raw.split(',').map(str::trim).filter(|t| !t.is_empty()).map(Secret::new).collect();
        if tokens.iter().any(|t| t.expose().len() < MIN_TOKEN_BYTES) {
            self.errors.push(format!("{name}: every token must be at least {MIN_TOKEN_BYTES} bytes"));
        }
        tokens
    }

    fn prefixed(&mut self, name: &str, prefixes: &[&str], required: bool) -> Option<String> {
        let value = if required { Some(self.required(name)) } else { self.get(name).map(str::to_owned) };
        match value {
            Some(v) if v.is_empty() => None,
            Some(v) if prefixes.iter().any(|p| v.starts_with(p) && v.len() > p.len()) => Some(v),
            Some(_) => {
                // Never echo the value: it may be a secret pasted into the wrong variable.
                self.errors.push(format!("{name} must start with {}", prefixes.join(" or ")));
                None
            }
            None => None,
        }
    }
}

pub fn env_map() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// `DATABASE_URL` alone, for commands that only need the database.
pub fn database_url(vars: &HashMap<String, String>) -> String {
    Vars { vars, errors: Vec::new() }.get("DATABASE_URL").unwrap_or(DEFAULT_DATABASE_URL).to_owned()
}

/// `HYDRA_AUTH_SECRET` alone: `token` mints before the rest of the service is set up.
pub fn auth_secret(vars: &HashMap<String, String>) -> Result<Secret, ConfigErrors> {
    let mut v = Vars { vars, errors: Vec::new() };
    let secret = v.auth_secret();
    v.finish(secret)
}

/// What `stripe setup` needs: it runs before the price ids that [`Config`] requires exist (it is
/// what makes them), so it cannot read the full configuration.
#[derive(Clone, Debug)]
pub struct StripeSetupConfig {
    pub secret_key: Secret,
    pub api_base: String,
    /// Without a trailing slash; the webhook endpoint is made under it.
    pub public_url: String,
}

/// `STRIPE_SECRET_KEY`, `STRIPE_API_BASE` and `PUBLIC_URL`, checked as [`Config`] checks them;
/// `PUBLIC_URL` has no default here, since Stripe must reach the webhook endpoint.
pub fn stripe_setup(vars: &HashMap<String, String>) -> Result<StripeSetupConfig, ConfigErrors> {
    let mut v = Vars { vars, errors: Vec::new() };
    let secret_key = v.stripe_secret_key();
    let api_base = v.stripe_api_base();
    let public_url = v.public_url().unwrap_or_else(|| {
        v.errors
            .push("PUBLIC_URL is required: the webhook endpoint is PUBLIC_URL/api/webhooks/stripe".into());
        String::new()
    });
    let secret_key = Secret::new(secret_key.unwrap_or_default());
    v.live_key_rules(&secret_key, &api_base, &public_url);
    v.finish(StripeSetupConfig { secret_key, api_base, public_url })
}

impl Config {
    /// The full configuration `serve` needs; every missing or malformed setting is reported.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
        let mut v = Vars { vars, errors: Vec::new() };
        let database_url = database_url(vars);
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            v.errors.push("DATABASE_URL must start with sqlite:// or postgres://".into());
        }
        let bind_raw = v.get("BIND").unwrap_or(DEFAULT_BIND).to_owned();
        let bind = bind_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            v.errors.push("BIND must be an address like 127.0.0.1:8000".into());
            SocketAddr::from(([127, 0, 0, 1], 8000))
        });
        let billing_enabled = v.billing_enabled();
        let grace_period_days = v.grace_period_days();

        let secret_key = v.stripe_secret_key();
        let publishable_key = v.prefixed("STRIPE_PUBLISHABLE_KEY", &["pk_test_", "pk_live_"], false);
        let webhook_secrets = v.tokens_with_prefix("STRIPE_WEBHOOK_SECRET", "whsec_");
        let prices = Prices {
            team_monthly: v.prefixed("STRIPE_TEAM_MONTHLY_PRICE_ID", &["price_"], true).unwrap_or_default(),
            team_annual: v.prefixed("STRIPE_TEAM_ANNUAL_PRICE_ID", &["price_"], true).unwrap_or_default(),
            business_monthly: v
                .prefixed("STRIPE_BUSINESS_MONTHLY_PRICE_ID", &["price_"], true)
                .unwrap_or_default(),
            business_annual: v
                .prefixed("STRIPE_BUSINESS_ANNUAL_PRICE_ID", &["price_"], true)
                .unwrap_or_default(),
        };
        let portal_config_id = v.prefixed("STRIPE_PORTAL_CONFIG_ID", &["bpc_"], false);
        let api_base = v.stripe_api_base();
        let live = secret_key.as_deref().is_some_and(is_live_key);
        let calls_per_second = match v.get("STRIPE_CALLS_PER_SECOND").map(str::parse::<u32>) {
            None => {
                if live {
                    80
                } else {
                    20
                }
            }
            Some(Ok(n)) if n > 0 => n,
            Some(_) => {
                v.errors.push("STRIPE_CALLS_PER_SECOND must be a whole number above 0".into());
                20
            }
        };
        let timeout = match v.get("STRIPE_TIMEOUT_MS").map(str::parse::<u64>) {
            None => std::time::Duration::from_secs(20),
            Some(Ok(ms)) if (100..=120_000).contains(&ms) => std::time::Duration::from_millis(ms),
            Some(_) => {
                v.errors.push("STRIPE_TIMEOUT_MS must be milliseconds from 100 to 120000".into());
                std::time::Duration::from_secs(20)
            }
        };
        let stripe = StripeConfig {
            timeout,
            secret_key: Secret::new(secret_key.unwrap_or_default()),
            publishable_key,
            webhook_secrets,
            prices,
            portal_config_id,
            api_base,
            calls_per_second,
        };

        let auth_secret = v.auth_secret();
        let service_tokens = v.tokens("HYDRA_SERVICE_TOKEN", true);
        let admin_tokens = v.tokens("HYDRA_ADMIN_TOKEN", false);
        let smtp_url = v.get("SMTP_URL").map(Secret::new);

        let public_url = v.public_url().unwrap_or_else(|| format!("http://{bind}"));
        let email_from = v.get("EMAIL_FROM").map_or_else(|| default_email_from(&public_url), str::to_owned);
        if email_from.parse::<lettre::message::Mailbox>().is_err() {
            v.errors.push(
                "EMAIL_FROM must be an address, optionally with a name: Hydra <billing@example.com>".into(),
            );
        }
        v.live_key_rules(&stripe.secret_key, &stripe.api_base, &public_url);
        if stripe.is_live() && stripe.portal_config_id.is_none() {
            v.errors.push("STRIPE_PORTAL_CONFIG_ID is required with a live Stripe key".into());
        }

        v.finish(Config {
            database_url,
            bind,
            public_url,
            billing_enabled,
            grace_period_days,
            auth_secret,
            service_tokens,
            admin_tokens,
            stripe,
            smtp_url,
            email_from,
            reservation_ttl_secs: DEFAULT_RESERVATION_TTL_SECS,
            demo: false,
        })
    }

    /// Where the upgrade prompt and every 402 send people.
    pub fn upgrade_url(&self) -> String {
        format!("{}/billing/upgrade", self.public_url)
    }
}

/// The variables more than one reader needs, each parsed and checked in one place: [`Config`]
/// and the partial readers above (`token`, `stripe setup`) share them.
impl Vars<'_> {
    /// `value` when nothing was reported, else every problem found.
    fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() { Ok(value) } else { Err(ConfigErrors(self.errors)) }
    }

    fn auth_secret(&mut self) -> Secret {
        let secret = Secret::new(self.required("HYDRA_AUTH_SECRET"));
        if !secret.expose().is_empty() && secret.expose().len() < MIN_TOKEN_BYTES {
            self.errors.push(format!("HYDRA_AUTH_SECRET must be at least {MIN_TOKEN_BYTES} bytes"));
        }
        secret
    }

    fn stripe_secret_key(&mut self) -> Option<String> {
        self.prefixed("STRIPE_SECRET_KEY", &["sk_test_", "sk_live_", "rk_test_", "rk_live_"], true)
    }

    fn stripe_api_base(&self) -> String {
        self.get("STRIPE_API_BASE").unwrap_or(DEFAULT_STRIPE_API_BASE).trim_end_matches('/').to_owned()
    }

    /// `PUBLIC_URL` without its trailing slash, if set.
    fn public_url(&mut self) -> Option<String> {
        let url = self.get("PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned())?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.errors.push("PUBLIC_URL must be an http:// or https:// URL".into());
        }
        Some(url)
    }

    /// A live key talks only to the real Stripe, from a public https:// address.
    fn live_key_rules(&mut self, secret_key: &Secret, api_base: &str, public_url: &str) {
        if !is_live_key(secret_key.expose()) {
            return;
        }
        if !public_url.is_empty() && !public_url.starts_with("https://") {
            self.errors.push("PUBLIC_URL must be https:// with a live Stripe key".into());
        }
        if api_base != DEFAULT_STRIPE_API_BASE {
            self.errors.push("STRIPE_API_BASE cannot point elsewhere with a live Stripe key".into());
        }
    }

    fn billing_enabled(&mut self) -> bool {
        match self.get("BILLING_ENABLED").map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(_) => {
                self.errors.push("BILLING_ENABLED must be true or false".into());
                true
            }
        }
    }

    fn grace_period_days(&mut self) -> i64 {
        match self.get("GRACE_PERIOD_DAYS").map(str::parse::<i64>) {
            None => 7,
            Some(Ok(d)) if (0..=60).contains(&d) => d,
            Some(_) => {
                self.errors.push("GRACE_PERIOD_DAYS must be a whole number of days, 0 to 60".into());
                7
            }
        }
    }

    fn tokens_with_prefix(&mut self, name: &str, prefix: &str) -> Vec<Secret> {
        let Some(raw) = self.get(name) else {
            self.errors.push(format!("{name} is required"));
            return Vec::new();
        };
        let secrets: Vec<Secret> =
            raw.split(',').map(str::trim).filter(|t| !t.is_empty()).map(Secret::new).collect();
        if secrets.is_empty() || secrets.iter().any(|s| !s.expose().starts_with(prefix)) {
            self.errors.push(format!("{name}: every secret must start with {prefix}"));
        }
        secrets
    }
}

/// The default sender (when `EMAIL_FROM` is unset): no-reply at the public host.
fn default_email_from(public_url: &str) -> String {
    let host =
        public_url.split("://").nth(1).unwrap_or(public_url).split(['/', ':']).next().unwrap_or("localhost");
    let host = if host.contains('.') { host.to_owned() } else { format!("{host}.localdomain") };
    format!("Hydra Billing <no-reply@{host}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn complete() -> HashMap<String, String> {
        [
            ("STRIPE_SECRET_KEY", "sk_test_fake_0123456789"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_fake_abc,whsec_fake_def"),
            ("STRIPE_TEAM_MONTHLY_PRICE_ID", "price_tm"),
            ("STRIPE_TEAM_ANNUAL_PRICE_ID", "price_ta"),
            ("STRIPE_BUSINESS_MONTHLY_PRICE_ID", "price_bm"),
            ("STRIPE_BUSINESS_ANNUAL_PRICE_ID", "price_ba"),
            ("HYDRA_AUTH_SECRET", "fake-auth-secret-0123456789abcdef0123"),
            ("HYDRA_SERVICE_TOKEN", "fake-service-token-0123456789abcdef"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn the_email_sender_defaults_to_the_public_host_and_must_be_an_address() {
        let mut vars = complete();
        vars.insert("PUBLIC_URL".into(), "https://billing.example.com".into());
        let c = Config::from_vars(&vars).unwrap();
        assert_eq!(c.email_from, "Hydra Billing <no-reply@billing.example.com>");
        vars.insert("EMAIL_FROM".into(), "Acme <ap@acme.test>".into());
        assert_eq!(Config::from_vars(&vars).unwrap().email_from, "Acme <ap@acme.test>");
        vars.insert("EMAIL_FROM".into(), "not an address".into());
        let errors = Config::from_vars(&vars).unwrap_err().0;
        assert!(errors.iter().any(|e| e.starts_with("EMAIL_FROM")), "{errors:?}");
    }

    #[test]
    fn a_complete_environment_parses_with_defaults() {
        let c = Config::from_vars(&complete()).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.public_url, "http://127.0.0.1:8000");
        assert!(c.billing_enabled);
        assert_eq!(c.grace_period_days, 7);
        assert_eq!(c.stripe.webhook_secrets.len(), 2);
        assert!(c.admin_tokens.is_empty());
    }

    #[test]
    fn every_missing_setting_is_named_at_once() {
        let errors = Config::from_vars(&HashMap::new()).unwrap_err().0;
        for name in [
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "STRIPE_TEAM_MONTHLY_PRICE_ID",
            "STRIPE_TEAM_ANNUAL_PRICE_ID",
            "STRIPE_BUSINESS_MONTHLY_PRICE_ID",
            "STRIPE_BUSINESS_ANNUAL_PRICE_ID",
            "HYDRA_AUTH_SECRET",
            "HYDRA_SERVICE_TOKEN",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(name)), "{name} not reported in {errors:?}");
        }
    }

    #[test]
    fn malformed_values_are_reported_without_echoing_them() {
        let mut vars = complete();
        vars.insert("STRIPE_SECRET_KEY".into(), "pk_test_oops_secretish".into());
        vars.insert("HYDRA_SERVICE_TOKEN".into(), "short".into());
        vars.insert("GRACE_PERIOD_DAYS".into(), "seven".into());
        vars.insert("BILLING_ENABLED".into(), "maybe".into());
        let errors = Config::from_vars(&vars).unwrap_err();
        assert_eq!(errors.0.len(), 4, "{errors}");
        assert!(!errors.to_string().contains("pk_test_oops_secretish"));
        assert!(!errors.to_string().contains("short"));
    }

    #[test]
    fn a_live_key_demands_https_the_real_api_and_a_portal_configuration() {
        let mut vars = complete();
        vars.insert("STRIPE_SECRET_KEY".into(), "rk_live_fake_0123456789".into());
        vars.insert("STRIPE_API_BASE".into(), "http://127.0.0.1:12111".into());
        let errors = Config::from_vars(&vars).unwrap_err().0;
        assert!(errors.iter().any(|e| e.starts_with("PUBLIC_URL")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("STRIPE_API_BASE")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("STRIPE_PORTAL_CONFIG_ID")), "{errors:?}");
    }

    #[test]
    fn the_partial_readers_check_their_variables_as_the_full_one_does() {
        let mut vars = HashMap::new();
        assert_eq!(auth_secret(&vars).unwrap_err().0, vec!["HYDRA_AUTH_SECRET is required".to_owned()]);
        vars.insert("HYDRA_AUTH_SECRET".into(), "too-short".into());
        let errors = auth_secret(&vars).unwrap_err().0;
        assert_eq!(errors, vec![format!("HYDRA_AUTH_SECRET must be at least {MIN_TOKEN_BYTES} bytes")]);
        let full = Config::from_vars(&vars).unwrap_err().0;
        assert!(full.contains(&errors[0]), "the same message from Config: {full:?}");
        assert_eq!(auth_secret(&complete()).unwrap(), Config::from_vars(&complete()).unwrap().auth_secret);

        let errors = stripe_setup(&HashMap::new()).unwrap_err().0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("STRIPE_SECRET_KEY") && errors[1].starts_with("PUBLIC_URL"));
        let mut vars = complete();
        vars.insert("PUBLIC_URL".into(), "https://billing.example.com/".into());
        vars.insert("STRIPE_API_BASE".into(), "http://127.0.0.1:12111/".into());
        let setup = stripe_setup(&vars).unwrap();
        assert_eq!(setup.public_url, "https://billing.example.com");
        assert_eq!(setup.api_base, "http://127.0.0.1:12111");
        vars.insert("STRIPE_SECRET_KEY".into(), "sk_live_fake_0123456789".into());
        vars.insert("PUBLIC_URL".into(), "http://billing.example.com".into());
        let errors = stripe_setup(&vars).unwrap_err().0;
        assert!(errors.iter().any(|e| e.starts_with("PUBLIC_URL must be https")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("STRIPE_API_BASE")), "{errors:?}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config::from_vars(&complete()).unwrap();
        let debug = format!("{c:?}");
        for secret in ["sk_test_fake_0123456789", "whsec_fake_abc", "fake-auth-secret", "fake-service-token"]
        {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        assert!(debug.contains("REDACTED"));
    }
}
