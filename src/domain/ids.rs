//! Owns the identifiers that arrive from outside (paths, bodies, tokens, Stripe): each is parsed
//! once into a newtype, so a value that reaches the store or a Stripe path is known to be safe in
//! URLs, logs and SQL (no NUL, no slash, bounded length).

use std::fmt;

/// Why an identifier was refused: a sentence for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

/// ASCII letters and digits plus the extra bytes allowed, at most `max` long, not empty.
fn charset_ok(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr, $message:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<$name, InvalidId> {
                let check: fn(&str) -> bool = $check;
                if check(s) { Ok($name(s.to_owned())) } else { Err(InvalidId($message)) }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

pub const MAX_TENANT_ID_LEN: usize = 64;

id_type!(
    /// Hydra's tenant ids: 1 to 64 of `A-Z a-z 0-9 _ - .`, starting with a letter or digit.
    TenantId,
    |s| charset_ok(s, MAX_TENANT_ID_LEN, b"_-.") && s.as_bytes()[0].is_ascii_alphanumeric(),
    "a tenant id is 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit"
);
id_type!(
    /// Our own row ids (`res_…`, `quo_…`): letters, digits and '_'.
    ReservationId,
    |s| charset_ok(s, 64, b"_"),
    "not a reservation id"
);
id_type!(QuoteId, |s| charset_ok(s, 64, b"_"), "quote_id is not a quote id");
id_type!(
    /// A Checkout Session id as Stripe makes them.
    SessionId,
    |s| charset_ok(s, 200, b"_") && s.starts_with("cs_"),
    "session_id is a Checkout Session id (cs_…)"
);
id_type!(
    /// A Stripe event id (`evt_…`), as stored from a verified webhook.
    EventId,
    |s| charset_ok(s, 255, b"_"),
    "not an event id"
);
id_type!(
    CustomerId,
    |s| charset_ok(s, 255, b"_") && s.starts_with("cus_"),
    "a Stripe customer id is cus_ followed by letters and digits"
);

/// A tenant's display name as Hydra announces it: at most 200 characters, no control characters.
pub fn check_tenant_name(name: &str) -> Result<(), &'static str> {
    if name.chars().count() > 200 {
        return Err("name is at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("name holds no control characters");
    }
    Ok(())
}

/// An address a billing email can be sent to: one `@`, a dotted domain, no spaces or controls.
/// Deliberately loose: the mail server is the judge; this only refuses what is surely not one.
pub fn plausible_email(email: &str) -> bool {
    email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked_for_length_and_charset() {
        for ok in ["t1", "acme-corp", "org_42.eu", &"a".repeat(64)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-lead", "has space", "slash/y", "ünï", "semi;colon", "nul\0x", &"a".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_ids_refuse_what_could_escape_a_path_or_a_log() {
        assert!(ReservationId::parse("res_0a1b").is_ok());
        assert!(ReservationId::parse("res%00x").is_err());
        assert!(ReservationId::parse("res\0x").is_err());
        assert!(QuoteId::parse(&"q".repeat(65)).is_err());
        assert!(SessionId::parse("cs_test_1").is_ok());
        assert!(SessionId::parse("sub_1").is_err());
        assert!(SessionId::parse("cs_../x").is_err());
        assert!(EventId::parse("evt_1").is_ok());
        assert!(EventId::parse("evt 1").is_err());
    }
}
