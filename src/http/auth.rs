//! Owns who may call what: tenant tokens (HS256 JWTs), Hydra's service token and the admin token,
//! as axum extractors (the README's "How Hydra calls it" says who may call what).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::Secret;
use crate::domain::clock::Timestamp;
use crate::domain::ids::TenantId;

pub const AUDIENCE: &str = "hydra-billing";
pub const SESSION_COOKIE: &str = "hydra_session";
/// A tenant token lives at most this long after it was issued.
pub const MAX_TOKEN_TTL_SECS: i64 = 24 * 3600;
const LEEWAY_SECS: i64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    BillingAdmin,
    Member,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    /// The tenant id.
    pub sub: String,
    /// The user, for the audit log.
    pub uid: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub iat: Timestamp,
    pub exp: Timestamp,
}

pub struct MintRequest<'a> {
    pub tenant: &'a str,
    pub uid: &'a str,
    pub role: Role,
    pub email: Option<&'a str>,
    pub ttl_secs: i64,
    pub now: Timestamp,
}

pub fn mint(secret: &Secret, req: MintRequest<'_>) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=MAX_TOKEN_TTL_SECS).contains(&req.ttl_secs),
        "a token lives between 1 second and 24 hours"
    );
    let claims = Claims {
        aud: AUDIENCE.into(),
        sub: req.tenant.into(),
        uid: req.uid.into(),
        role: req.role,
        email: req.email.map(str::to_owned),
        iat: req.now,
        exp: req.now + req.ttl_secs,
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

/// Checks signature, algorithm, audience and lifetime against our own clock (so tests can move
/// time). Any failure is just "unauthorized": the reason is not the caller's business.
pub fn verify(secret: &Secret, token: &str, now: Timestamp) -> Option<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    // Expiry is checked below against the injected clock, not the system's.
    validation.validate_exp = false;
    let key = DecodingKey::from_secret(secret.expose().as_bytes());
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).ok()?.claims;
    let lifetime_ok = claims.exp > claims.iat && claims.exp - claims.iat <= MAX_TOKEN_TTL_SECS;
    let not_expired = now < claims.exp + LEEWAY_SECS;
    let not_future = claims.iat <= now + LEEWAY_SECS;
    // The tenant a token names is an id like any other: one the store could not hold (a NUL,
    // a slash) makes the token invalid rather than a query fail.
    let tenant_ok = TenantId::parse(&claims.sub).is_ok();
    (lifetime_ok && not_expired && not_future && tenant_ok).then_some(claims)
}

/// True when `presented` equals any of `accepted`, comparing every candidate in constant time.
pub fn token_matches(presented: &str, accepted: &[Secret]) -> bool {
    accepted.iter().fold(false, |found, candidate| {
        found | bool::from(presented.as_bytes().ct_eq(candidate.expose().as_bytes()))
    })
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The session cookie's value among the request's cookies (pages also ask whether one was sent).
pub(crate) fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// A call from Hydra's own services.
pub struct ServiceAuth;

impl FromRequestParts<AppState> for ServiceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) if token_matches(token, &state.config.service_tokens) => Ok(ServiceAuth),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// An operator's call; `actor` is who the audit log names.
pub struct AdminAuth {
    pub actor: String,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) if token_matches(token, &state.config.admin_tokens) => {
                let actor = parts
                    .headers
                    .get("x-hydra-actor")
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.len() <= 200)
                    .unwrap_or("admin-token");
                Ok(AdminAuth { actor: actor.to_owned() })
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// A tenant's user, from a bearer token or the `hydra_session` cookie.
#[derive(Debug)]
pub struct TenantAuth {
    pub claims: Claims,
    /// `claims.sub`, parsed once when the token is verified.
    tenant: TenantId,
}

impl TenantAuth {
    pub fn tenant_id(&self) -> &str {
        self.tenant.as_str()
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Checkout, seats, upgrade and portal change what a tenant pays.
    pub fn require_billing_admin(&self) -> Result<(), ApiError> {
        match self.claims.role {
            Role::BillingAdmin => Ok(()),
            Role::Member => Err(ApiError::Forbidden("only a billing admin can do this".into())),
        }
    }
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, via_cookie) = match bearer(parts) {
            Some(token) => (token, false),
            None => (session_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?, true),
        };
        let claims =
            verify(&state.config.auth_secret, token, state.clock.now()).ok_or(ApiError::Unauthorized)?;
        if via_cookie && !matches!(parts.method, Method::GET | Method::HEAD) {
            check_same_origin(parts, &state.config.public_url)?;
        }
        let tenant = TenantId::parse(&claims.sub).map_err(|_| ApiError::Unauthorized)?;
        Ok(TenantAuth { claims, tenant })
    }
}

/// Cookies ride along on cross-site requests; a state-changing cookie call must prove it came
/// from our own pages and carry JSON (which a plain HTML form cannot send).
fn check_same_origin(parts: &Parts, public_url: &str) -> Result<(), ApiError> {
    let header_str = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let origin_ok = match header_str(header::ORIGIN.as_str()) {
        Some(origin) => origin == origin_of(public_url),
        None => header_str("sec-fetch-site") == Some("same-origin"),
    };
    let json = header_str(header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.split(';').next().is_some_and(|m| m.trim() == "application/json"));
    if origin_ok && json { Ok(()) } else { Err(ApiError::Forbidden("cross-site request refused".into())) }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("fake-auth-secret-0123456789abcdef0123")
    }

    fn token(ttl: i64, now: Timestamp) -> String {
        mint(
            &secret(),
            MintRequest { tenant: "t1", uid: "u1", role: Role::Member, email: None, ttl_secs: ttl, now },
        )
        .unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires_with_leeway() {
        let t = token(3600, 1000);
        assert_eq!(verify(&secret(), &t, 1000).unwrap().sub, "t1");
        assert!(verify(&secret(), &t, 1000 + 3600 + LEEWAY_SECS - 1).is_some());
        assert!(verify(&secret(), &t, 1000 + 3600 + LEEWAY_SECS).is_none());
    }

    #[test]
    fn a_token_from_another_key_or_algorithm_is_refused() {
        let t = token(3600, 1000);
        assert!(verify(&Secret::new("another-secret-0123456789abcdef012345"), &t, 1000).is_none());
        let claims = verify(&secret(), &t, 1000).unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&secret(), &hs512, 1000).is_none());
    }

    #[test]
    fn tokens_longer_than_a_day_are_refused_even_when_signed() {
        let claims = Claims {
            aud: AUDIENCE.into(),
            sub: "t1".into(),
            uid: "u".into(),
            role: Role::Member,
            email: None,
            iat: 1000,
            exp: 1000 + MAX_TOKEN_TTL_SECS + 1,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&secret(), &t, 1000).is_none());
        assert!(
            mint(
                &secret(),
                MintRequest {
                    tenant: "t",
                    uid: "u",
                    role: Role::Member,
                    email: None,
                    ttl_secs: MAX_TOKEN_TTL_SECS + 1,
                    now: 0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn token_comparison_accepts_any_configured_token_only() {
        let accepted = [Secret::new("a".repeat(32)), Secret::new("b".repeat(32))];
        assert!(token_matches(&"b".repeat(32), &accepted));
        assert!(!token_matches(&"c".repeat(32), &accepted));
        assert!(!token_matches(&"b".repeat(31), &accepted));
        assert!(!token_matches("", &[]));
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = axum::http::Request::builder().method(Method::POST).uri("/api/billing/checkout");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn cookie_writes_must_come_from_our_origin_and_carry_json() {
        let public = "https://billing.example.com";
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(check_same_origin(&parts(&[("origin", public), json]), public).is_ok());
        assert!(check_same_origin(&parts(&[("sec-fetch-site", "same-origin"), json]), public).is_ok());
        for refused in [
            parts(&[("origin", "https://evil.example"), json]),
            parts(&[("sec-fetch-site", "cross-site"), json]),
            parts(&[json]),
            parts(&[("origin", public), ("content-type", "application/x-www-form-urlencoded")]),
            parts(&[("origin", public)]),
        ] {
            assert!(matches!(check_same_origin(&refused, public), Err(ApiError::Forbidden(_))));
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let p = parts(&[("cookie", "a=1; hydra_session=tok.en.x; b=2")]);
        assert_eq!(session_cookie(&p.headers), Some("tok.en.x"));
        assert_eq!(session_cookie(&parts(&[("cookie", "hydra_session_old=x")]).headers), None);
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        assert_eq!(origin_of("https://billing.example.com/x/y"), "https://billing.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
    }
}
