//! Owns the static parts of the billing UI served by the service itself: the upgrade-prompt
//! custom element (one script Hydra's pages include) and the page showing its every variant.

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

/// The headers every page sends (design.md): no framing, no referrer to other sites.
pub fn page_headers() -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'")),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    ]
}
