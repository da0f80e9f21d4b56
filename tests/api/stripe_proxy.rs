//! Owns a test-only proxy in front of the Stripe simulator that makes it behave like Stripe's
//! network: each call can be slowed by a fixed latency, and calls to one endpoint can be held
//! open until the test releases them, and every request is recorded as Stripe received it (so a
//! test can assert what was sent). Real HTTP on both sides; the service sees only a base URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// One call as Stripe received it: method, path, and its form (or query) parameters.
type Received = (Method, String, Vec<(String, String)>);
/// A finished call's parameters, when it arrived and when it was answered.
pub type Span = (Vec<(String, String)>, Instant, Instant);

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    latency_ms: AtomicU64,
    /// (method, path) of the calls to hold while the gate is closed.
    hold: std::sync::Mutex<Option<(Method, String)>>,
    gate: watch::Sender<bool>,
    held: AtomicUsize,
    /// (method, path, form or query parameters) of every call, in order.
    received: std::sync::Mutex<Vec<Received>>,
    /// Each finished call with when it arrived and when its answer went back.
    spans: std::sync::Mutex<Vec<(Received, Instant, Instant)>>,
}

pub struct StripeProxy {
    pub base: String,
    state: Arc<ProxyState>,
}

impl StripeProxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: &str) -> StripeProxy {
        let (gate, _) = watch::channel(true);
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            latency_ms: AtomicU64::new(0),
            hold: std::sync::Mutex::new(None),
            gate,
            held: AtomicUsize::new(0),
            received: std::sync::Mutex::new(Vec::new()),
            spans: std::sync::Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(forward).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        StripeProxy { base, state }
    }

    /// Every call waits this long before it is forwarded (Stripe's round trip).
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// From now on, `method path` calls wait until [`StripeProxy::release`].
    pub fn hold(&self, method: Method, path: &str) {
        *self.state.hold.lock().unwrap() = Some((method, path.to_owned()));
        self.state.gate.send_replace(false);
    }

    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// The parameters of every `method path` call received so far, oldest first.
    pub fn received(&self, method: Method, path: &str) -> Vec<Vec<(String, String)>> {
        let all = self.state.received.lock().unwrap();
        all.iter()
            .filter(|(m, p, _)| *m == method && p == path)
            .map(|(_, _, params)| params.clone())
            .collect()
    }

    /// Every finished `method path` call: its parameters, when it arrived, when it was answered.
    pub fn spans(&self, method: Method, path: &str) -> Vec<Span> {
        let all = self.state.spans.lock().unwrap();
        all.iter()
            .filter(|((m, p, _), _, _)| *m == method && p == path)
            .map(|((_, _, params), start, end)| (params.clone(), *start, *end))
            .collect()
    }

    /// Calls being held right now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = if method == Method::GET {
        uri.query().unwrap_or_default().to_owned()
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let arrived = Instant::now();
    let call = (method.clone(), uri.path().to_owned(), form_pairs(&raw));
    state.received.lock().unwrap().push(call.clone());
    let latency = state.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let held = state.hold.lock().unwrap().as_ref().is_some_and(|(m, p)| *m == method && uri.path() == p);
    if held {
        let mut gate = state.gate.subscribe();
        state.held.fetch_add(1, Ordering::SeqCst);
        let _ = gate.wait_for(|open| *open).await;
        state.held.fetch_sub(1, Ordering::SeqCst);
    }
    let url = format!("{}{}", state.upstream, uri.path_and_query().map_or("", |p| p.as_str()));
    let mut request = state.client.request(method, url).body(body);
    for name in ["authorization", "content-type", "idempotency-key", "stripe-version"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v);
        }
    }
    let response = relay(request).await;
    state.spans.lock().unwrap().push((call, arrived, Instant::now()));
    response
}

async fn relay(request: reqwest::RequestBuilder) -> Response {
    match request.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert("content-type", ct);
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// `a=1&b%5B0%5D=x+y` as `[("a", "1"), ("b[0]", "x y")]`, decoded by the url crate reqwest uses.
fn form_pairs(raw: &str) -> Vec<(String, String)> {
    let Ok(url) = reqwest::Url::parse(&format!("http://form.invalid/?{raw}")) else { return Vec::new() };
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
