//! Owns the browser-facing pieces around the pages: the upgrade-prompt custom element (one script
//! Hydra's pages include), the page showing its every variant, the page security headers, and
//! `POST /billing/session`, which keeps a tenant token in the session cookie.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;

const PROMPT_JS: &str = include_str!("../../assets/upgrade-prompt.js");
const PROMPT_DEMO: &str = include_str!("../../assets/prompt-demo.html");

/// `GET /billing/upgrade-prompt.js`: public and cacheable; it carries no data.
pub async fn upgrade_prompt_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        PROMPT_JS,
    )
}

/// `GET /billing/upgrade-prompt`: every variant on one page.
pub async fn upgrade_prompt_demo() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        page_headers(),
        PROMPT_DEMO,
    )
}

/// The CSP of every page: no framing, and scripts only from this origin, so
/// nothing injected into a page could run even if escaping ever failed.
pub const PAGE_CSP: &str = "frame-ancestors 'none'; script-src 'self'; object-src 'none'; base-uri 'none'";

/// The headers every page sends: no framing, no referrer to other sites.
pub fn page_headers() -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    ]
}

#[derive(serde::Deserialize)]
pub struct SessionForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only a path on this site: `/x`, never `//host` or `/\host` (which browsers read as another
/// site). Browsers also drop tabs and newlines from a URL and read `\` as `/`, so `/\t/host`
/// would become `//host`: no control character, whitespace or backslash is allowed anywhere.
fn relative_path(next: Option<&str>) -> &str {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            p
        }
        _ => "/billing",
    }
}

/// `POST /billing/session` (form: `token`, optional `next`): checks the tenant token and keeps it
/// in the `hydra_session` cookie, then answers 303 to a relative path. The token is its own
/// authentication, so no origin check applies here.
pub async fn start_session(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    form: Result<axum::Form<SessionForm>, axum::extract::rejection::FormRejection>,
) -> Result<axum::response::Response, super::error::ApiError> {
    let axum::Form(form) =
        form.map_err(|_| super::error::ApiError::invalid("the form needs a token field"))?;
    let claims = super::auth::verify(&state.config.auth_secret, form.token.trim(), state.clock.now())
        .ok_or(super::error::ApiError::Unauthorized)?;
    signed_in(&state, form.token.trim(), claims.exp, relative_path(form.next.as_deref()))
}

/// A 303 to `next` (a path on this site) that keeps `token`, already verified, in the session
/// cookie until it expires.
/// The `Set-Cookie` value that signs a browser in with `token` until `expires_at`.
pub fn session_cookie(
    state: &super::AppState,
    token: &str,
    expires_at: crate::domain::clock::Timestamp,
) -> Result<HeaderValue, super::error::ApiError> {
    let secure = if state.config.public_url.starts_with("https://") { "; Secure" } else { "" };
    let max_age = (expires_at - state.clock.now()).max(0);
    let cookie = format!(
        "{}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}",
        super::auth::SESSION_COOKIE
    );
    HeaderValue::from_str(&cookie).map_err(|_| super::error::ApiError::Unauthorized)
}

pub fn signed_in(
    state: &super::AppState,
    token: &str,
    expires_at: crate::domain::clock::Timestamp,
    next: &str,
) -> Result<axum::response::Response, super::error::ApiError> {
    let cookie = session_cookie(state, token, expires_at)?;
    let location = HeaderValue::from_str(next).unwrap_or_else(|_| HeaderValue::from_static("/billing"));
    Ok((
        axum::http::StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, location)],
        page_headers(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_this_site_are_followed() {
        assert_eq!(relative_path(Some("/billing/upgrade?x=1")), "/billing/upgrade?x=1");
        for elsewhere in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "billing",
            "/a\r\nSet-Cookie: x",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
        ] {
            assert_eq!(relative_path(Some(elsewhere)), "/billing", "{elsewhere:?}");
        }
        assert_eq!(relative_path(None), "/billing");
    }
}
