//! Browser tests of the billing pages (issue 6): headless Chromium, driven over WebDriver by
//! Debian's chromedriver, against the real server and the simulator's hosted Checkout, with
//! webhooks delivered for real. Each test saves a screenshot of every page it sees under
//! `screenshots/` (git ignores it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{WithStripe, eventually, spawn_site};

/// Chromium and its driver, as Debian installs them (`scripts/test` installs them when missing).
fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// One browser: its own chromedriver and profile, both gone when the test ends.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    base: String,
    name: &'static str,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser(base: &str, name: &'static str) -> Browser {
    let chromedriver = tool("HYDRA_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = tool("HYDRA_CHROMIUM", "/usr/bin/chromium");
    assert!(
        std::path::Path::new(&chromedriver).exists() && std::path::Path::new(&chromium).exists(),
        "the browser tests need Debian's chromium and chromium-driver ({chromium}, {chromedriver}); \
         scripts/test installs them"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // The machine has no outside network: without these Chromium keeps trying to reach
            // Google's services.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Browser { client: Some(client), driver, _profile: profile, base: base.to_owned(), name }
}

impl Browser {
    fn c(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    async fn goto(&self, path: &str) {
        self.c().goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// Signs in the way Hydra does: a form posted to `/billing/session` with the tenant token.
    async fn sign_in(&self, token: &str) {
        self.goto("/billing/upgrade-prompt").await;
        self.c()
            .execute(
                "const f = document.createElement('form'); f.method = 'post'; f.action = '/billing/session';\
                 const t = document.createElement('input'); t.name = 'token'; t.value = arguments[0];\
                 f.append(t); document.body.append(f); f.submit();",
                vec![json!(token)],
            )
            .await
            .unwrap();
        self.wait_for_path("/billing").await;
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// A real double click: two presses in one WebDriver action chain, as fast as a hand can.
    async fn double_click(&self, css: &str) {
        let element = self.find(css).await;
        let double = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement { element, duration: None, x: 0.0, y: 0.0 })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.c().perform_actions(double).await.unwrap();
    }

    async fn path(&self) -> String {
        self.c().current_url().await.unwrap().path().to_owned()
    }

    async fn wait_for_path(&self, path: &str) {
        self.wait_until_at(|p| p == path, path).await;
    }

    /// Polls until the page's path satisfies `at` and the page has loaded.
    async fn wait_until_at(&self, at: impl Fn(&str) -> bool, what: &str) {
        let reached = eventually(Duration::from_secs(15), async || {
            at(self.c().current_url().await.unwrap().path()) && self.ready().await
        })
        .await;
        if !reached {
            let url = self.c().current_url().await.unwrap();
            panic!("never reached {what}; at {url}: {}", self.text("body").await);
        }
    }

    async fn wait_for_checkout(&self) {
        self.wait_until_at(|p| p.starts_with("/checkout/"), "the simulator's Checkout").await;
    }

    async fn ready(&self) -> bool {
        self.c().execute("return document.readyState", vec![]).await.ok() == Some(json!("complete"))
    }

    /// Polls until `css` is shown, up to `within`.
    async fn wait_visible(&self, css: &str, within: Duration) {
        let shown = eventually(within, async || match self.c().find(Locator::Css(css)).await {
            Ok(e) => e.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        })
        .await;
        assert!(shown, "{css} never showed on {}", self.path().await);
    }

    async fn hidden(&self, css: &str) -> bool {
        !self.find(css).await.is_displayed().await.unwrap()
    }

    async fn screenshot(&self, page: &str) {
        let png = self.c().screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}-{page}.png", self.name)), png).unwrap();
    }

    /// Every visible form control has a label, every visible text meets WCAG AA contrast, and the
    /// page fits the viewport's width.
    async fn assert_accessible_and_fits(&self) {
        self.assert_contrast().await;
        self.assert_focus_visible().await;
        let unlabeled = self
            .c()
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]\
                 .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.outerHTML)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabeled, json!([]), "controls without a label on {}", self.path().await);
        let overflow = self
            .c()
            .execute("return document.documentElement.scrollWidth - window.innerWidth", vec![])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{} scrolls sideways by {overflow}px", self.path().await);
    }

    /// WCAG 2.1 AA (1.4.3) on what the page shows: each visible element with text of its own, its
    /// computed colour against the first opaque background behind it (translucent ones blended in),
    /// at least 4.5:1, or 3:1 for large text. Disabled controls are exempt, as WCAG allows. Shadow
    /// roots (the upgrade prompt) are walked too. The pages use flat colours only, no images behind
    /// text, which is what makes the computed background the real one.
    async fn assert_contrast(&self) {
        let failures = self
            .c()
            .execute(
                r#"
const rgba = c => { const m = c.match(/[\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
const lum = c => { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); }); return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
const up = e => e.parentElement || (e.getRootNode() instanceof ShadowRoot ? e.getRootNode().host : null);
const background = e => {
  const layers = [];
  for (let n = e; n; n = up(n)) { const b = rgba(getComputedStyle(n).backgroundColor); if (b[3] > 0) { layers.push(b); if (b[3] === 1) break; } }
  return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
};
const all = [];
const walk = root => root.querySelectorAll('*').forEach(e => { all.push(e); if (e.shadowRoot) walk(e.shadowRoot); });
walk(document);
const out = [];
for (const e of all) {
  if (e.matches(':disabled') || e.closest(':disabled')) continue;
  const own = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent.trim()).join(' ').trim();
  if (!own || e.getClientRects().length === 0) continue;
  const s = getComputedStyle(e);
  if (s.visibility !== 'visible' || Number(s.opacity) === 0) continue;
  const bg = background(e), fg = over(rgba(s.color), bg);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const size = parseFloat(s.fontSize), large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) out.push(`${own.slice(0, 40)}: ${ratio.toFixed(2)}:1 (${s.color} on rgb(${bg.slice(0, 3).map(Math.round)}))`);
}
return out;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(failures, json!([]), "text below WCAG AA contrast on {}", self.path().await);
    }

    /// Keyboard only: Tab walks every focusable control on the page (into the prompt's shadow roots
    /// too) and each one shows a focus ring of at least 2px when it gets there. Stops when focus
    /// comes back round to a control already seen.
    async fn assert_focus_visible(&self) {
        self.c()
            .execute(
                "document.activeElement && document.activeElement.blur(); window.__tabbed = new Set();",
                vec![],
            )
            .await
            .unwrap();
        let mut reached = 0;
        for _ in 0..80 {
            let tab = KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: '\u{E004}' })
                .then(KeyAction::Up { value: '\u{E004}' });
            self.c().perform_actions(tab).await.unwrap();
            let focused = self
                .c()
                .execute(
                    "let a = document.activeElement;\
                     while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;\
                     if (!a || a === document.body) return null;\
                     if (window.__tabbed.has(a)) return 'again';\
                     window.__tabbed.add(a);\
                     const s = getComputedStyle(a);\
                     return [a.outerHTML.slice(0, 80), s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2];",
                    vec![],
                )
                .await
                .unwrap();
            match focused {
                Value::Array(f) => {
                    reached += 1;
                    assert_eq!(f[1], json!(true), "no visible focus on {} at {}", f[0], self.path().await);
                }
                // Past the last control Chromium's focus leaves the page, then starts over.
                Value::Null if reached == 0 => {}
                _ => break,
            }
        }
        assert!(reached > 0, "Tab reaches no control on {}", self.path().await);
        self.c().execute("document.activeElement && document.activeElement.blur();", vec![]).await.unwrap();
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

async fn site_with_team(tenant: &str, name: &str) -> WithStripe {
    let s = spawn_site().await;
    let r = s
        .app
        .put_tenant(tenant, &json!({"name": name, "billing_email": format!("billing@{tenant}.test")}))
        .await;
    assert!(r.status().is_success());
    s
}

/// A free team, and a browser signed in as it (on its settings page).
async fn free_team_signed_in(tenant: &str, name: &str, shots: &'static str) -> (WithStripe, Browser) {
    let s = site_with_team(tenant, name).await;
    let b = browser(&s.app.base, shots).await;
    b.sign_in(&s.app.tenant_token(tenant)).await;
    (s, b)
}

/// The tier, interval and seats the upgrade page has chosen.
async fn upgrade_choices(b: &Browser) -> Value {
    b.c()
        .execute(
            "return [document.querySelector('input[name=tier]:checked').value, \
             document.querySelector('input[name=interval]:checked').value, document.getElementById('seats').value]",
            vec![],
        )
        .await
        .unwrap()
}

/// Tier, interval and seats on the upgrade page, checked against the computed price.
async fn choose(b: &Browser, tier: &str, annual: bool, seats: &str) {
    b.click(&format!("input[name=tier][value={tier}]")).await;
    b.click(&format!("input[name=interval][value={}]", if annual { "year" } else { "month" })).await;
    let input = b.find("#seats").await;
    input.clear().await.unwrap();
    input.send_keys(seats).await.unwrap();
}

/// On the simulator's Checkout page: picks `card` and pays, then waits until that page is gone,
/// so that what the test reads next is the page the payment led to (3-D Secure's challenge keeps
/// the same path, so the path alone cannot tell; reading too early met a stale element).
async fn pay_at_checkout(b: &Browser, card: &str) {
    b.find(&format!("input[name=card][value={card}]")).await.click().await.unwrap();
    let pay = b.find("button[type=submit]").await;
    pay.click().await.unwrap();
    let moved_on =
        eventually(Duration::from_secs(15), async || pay.tag_name().await.is_err() && b.ready().await).await;
    assert!(moved_on, "the Checkout page never gave way to a loaded page after paying");
}

#[tokio::test]
async fn a_free_team_upgrades_to_team_annual_with_3_seats_and_sees_it_everywhere() {
    let (s, b) = free_team_signed_in("acme", "Acme Robotics", "upgrade").await;
    assert_eq!(b.text("[data-testid=plan-badge]").await, "Free");
    b.screenshot("settings-free").await;

    b.goto("/billing/upgrade").await;
    b.assert_accessible_and_fits().await;
    choose(&b, "team", false, "3").await;
    assert_eq!(
        b.text("#total").await,
        "Due today: $60.00 (3 seats × $20.00 per seat per month), then monthly."
    );
    assert_eq!(b.text("[data-testid=price-team]").await, "$20.00 per seat / month");
    let radio = b
        .c()
        .execute("const r = document.querySelector('input[name=tier][value=team]').getBoundingClientRect(); return [r.width, r.height];", vec![])
        .await
        .unwrap();
    let (w, h) = (radio[0].as_f64().unwrap(), radio[1].as_f64().unwrap());
    assert!(w < 2.0 * h, "the radio keeps its shape, so its focus ring is round: {w}×{h}");
    choose(&b, "team", true, "3").await;
    assert_eq!(
        b.text("#total").await,
        "Due today: $576.00 (3 seats × $192.00 per seat per year). You save $144.00 a year (20%) against monthly."
    );
    // Annual prices say so on the cards too.
    assert_eq!(b.text("[data-testid=price-team]").await, "$16.00 per seat / month, billed $192.00 yearly");
    assert_eq!(
        b.text("[data-testid=price-business]").await,
        "$32.00 per seat / month, billed $384.00 yearly"
    );
    b.screenshot("upgrade").await;
    b.click("#checkout").await;

    // The simulator's hosted Checkout, for the annual Team price and 3 seats.
    b.wait_for_checkout().await;
    assert!(b.text("body").await.contains("$192.00 per seat / year"));
    assert_eq!(b.find("input[name=quantity]").await.prop("value").await.unwrap().as_deref(), Some("3"));
    b.screenshot("checkout").await;
    pay_at_checkout(&b, "pm_card_visa").await;

    b.wait_for_path("/billing/success").await;
    assert!(b.text("h1").await.starts_with("You're on Team"));
    assert!(b.text("#progress").await.contains("Provisioning takes a moment") || !b.hidden("#done").await);
    b.wait_visible("#done", Duration::from_secs(25)).await;
    assert_eq!(b.text("#done").await, "All set: Team is active for your team.");
    // The success page says what was bought.
    let row = s.app.tenant("acme").await;
    let renews = chrono::DateTime::from_timestamp(row.stripe_current_period_end.unwrap(), 0).unwrap();
    b.wait_visible("[data-testid=bought]", Duration::from_secs(5)).await;
    assert_eq!(b.text("#bought-seats").await, "3");
    assert_eq!(b.text("#bought-billing").await, "Annual");
    assert_eq!(b.text("#bought-price").await, "$576.00 per year");
    assert_eq!(b.text("#bought-renews").await, renews.format("%-d %B %Y").to_string());
    assert!(b.text("#receipt").await.starts_with("Stripe emails the receipt to "));
    b.assert_accessible_and_fits().await;
    b.screenshot("success").await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.screenshot("success-phone").await;
    b.c().set_window_size(1200, 1000).await.unwrap();

    b.goto("/billing").await;
    assert_eq!(b.text("[data-testid=plan-badge]").await, "Team");
    assert_eq!(b.text("[data-testid=interval-badge]").await, "Annual");
    assert_eq!(b.text("[data-testid=seats]").await, "3");
    assert_eq!(row.stripe_interval.as_deref(), Some("year"));
    assert_eq!(b.text("[data-testid=renewal]").await, renews.format("%-d %B %Y").to_string());
    b.assert_accessible_and_fits().await;
    b.screenshot("settings-team").await;
    b.close().await;
}

#[tokio::test]
async fn the_3ds_card_path_authenticates_on_checkout_then_provisions_business() {
    let (s, b) = free_team_signed_in("tds", "Three D", "3ds").await;
    b.goto("/billing/upgrade?tier=business").await;
    assert!(b.find("input[name=tier][value=business]").await.is_selected().await.unwrap());
    // Keyboard only. Enter in the seats field stays on the page (it never leaves for a payment);
    // Enter on the button goes to Checkout.
    let seats = b.find("#seats").await;
    seats.clear().await.unwrap();
    seats.send_keys("2\u{E007}").await.unwrap();
    assert_eq!(b.path().await, "/billing/upgrade");
    b.find("#checkout").await.send_keys("\u{E007}").await.unwrap();
    b.wait_for_checkout().await;
    pay_at_checkout(&b, "pm_card_authenticationRequired").await;
    assert!(b.text("body").await.contains("Your bank asks you to confirm this payment."));
    b.screenshot("challenge").await;
    b.click("button[name=auth][value=succeed]").await;

    b.wait_for_path("/billing/success").await;
    b.wait_visible("#done", Duration::from_secs(25)).await;
    assert_eq!(b.text("#done").await, "All set: Business is active for your team.");
    let row = s.app.tenant("tds").await;
    assert_eq!((row.plan_tier.as_str(), row.stripe_seat_count), ("business", Some(2)));
    b.close().await;
}

/// Every Checkout Session the simulator has made for `customer`, whatever its state.
async fn sessions_of(s: &WithStripe, customer: &str) -> Vec<Value> {
    let world = s.sim().shared.world.lock().await;
    world.list("checkout.session").into_iter().filter(|c| c["customer"] == customer).collect()
}

#[tokio::test]
async fn a_double_click_on_checkout_creates_one_session() {
    let (s, b) = free_team_signed_in("dbl", "Double", "double-click").await;
    b.goto("/billing/upgrade").await;
    b.double_click("#checkout").await;
    b.wait_for_checkout().await;
    let customer = s.app.tenant("dbl").await.stripe_customer_id.expect("checkout made a customer");
    let sessions = sessions_of(&s, &customer).await;
    assert_eq!(sessions.len(), 1, "sessions made: {sessions:?}");
    assert_eq!(sessions[0]["status"], "open");
    b.close().await;
}

/// Each edit of the form recomputes the price and whether the button may be pressed; while
/// Checkout is being opened that must not bring the button back for a second session.
#[tokio::test]
async fn changing_the_seats_while_checkout_opens_cannot_send_a_second_one() {
    let (s, b) = free_team_signed_in("edit", "Edits", "edit-while-busy").await;
    b.goto("/billing/upgrade").await;
    // The page's own calls are held for 3 s, so the edit lands while the first is in flight.
    b.c()
        .execute(
            "const f = window.fetch; window.fetch = (...a) => new Promise(r => setTimeout(r, 3000)).then(() => f(...a));",
            vec![],
        )
        .await
        .unwrap();
    b.click("#checkout").await;
    let seats = b.find("#seats").await;
    seats.clear().await.unwrap();
    seats.send_keys("10").await.unwrap();
    let total = b.text("#total").await;
    assert!(total.starts_with("Due today: $200.00 (10 seats × "), "the price follows the edit: {total}");
    assert!(!b.find("#checkout").await.is_enabled().await.unwrap(), "the button stays disabled");
    b.click("#checkout").await;
    b.wait_for_checkout().await;
    let customer = s.app.tenant("edit").await.stripe_customer_id.expect("checkout made a customer");
    assert_eq!(sessions_of(&s, &customer).await.len(), 1);
    b.close().await;
}

#[tokio::test]
async fn a_backend_error_shows_its_own_message_and_the_button_comes_back() {
    let (mut s, b) = free_team_signed_in("err", "Errors", "error").await;
    b.goto("/billing/upgrade").await;
    // Stripe goes away: checkout answers 503 stripe_unavailable.
    drop(s.simulator.take());
    b.click("#checkout").await;
    b.wait_visible("#checkout-error", Duration::from_secs(20)).await;
    assert_eq!(b.text("#checkout-error").await, "Stripe is unavailable right now; try again in a moment");
    assert!(b.find("#checkout").await.is_enabled().await.unwrap(), "the button is usable again");
    assert_eq!(b.path().await, "/billing/upgrade");
    b.screenshot("upgrade-error").await;
    b.close().await;
}

#[tokio::test]
async fn the_free_settings_page_shows_three_bars_with_the_right_numbers() {
    let s = site_with_team("free", "Acme Robotics").await;
    for (metric, n) in [("fix", 4), ("doc_run", 1), ("linear_cycle", 2)] {
        for _ in 0..n {
            s.app.run("free", metric).await;
        }
    }
    let b = browser(&s.app.base, "free").await;
    b.sign_in(&s.app.tenant_token("free")).await;
    for (metric, text, now) in
        [("fix", "4 / 5", "4"), ("doc_run", "1 / 1", "1"), ("linear_cycle", "2 / 5", "2")]
    {
        assert_eq!(b.text(&format!("[data-testid=usage-{metric}]")).await, text);
        let bar = b.find(&format!("[aria-labelledby=bar-{metric}]")).await;
        assert_eq!(bar.attr("aria-valuenow").await.unwrap().as_deref(), Some(now));
    }
    assert_eq!(b.text("[data-testid=resets]").await, "Your free runs reset in 30 days, on 31 January 2026.");
    assert_eq!(b.text("[data-testid=limit-doc_run]").await, "· limit reached", "a full bar says so in words");
    assert_eq!(b.find("a.button[href='/billing/upgrade']").await.text().await.unwrap(), "Upgrade");
    b.assert_accessible_and_fits().await;
    b.screenshot("settings-free").await;
    // A phone's width: one column, nothing to scroll sideways.
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.screenshot("settings-free-phone").await;
    b.goto("/billing/upgrade").await;
    b.assert_accessible_and_fits().await;
    // What is due and the button to pay it are in view without scrolling.
    let in_view = b
        .c()
        .execute(
            "const r = document.getElementById('checkout').getBoundingClientRect(); \
             const t = document.getElementById('total').getBoundingClientRect(); \
             return [t.top >= 0 && r.bottom <= window.innerHeight, document.getElementById('total').textContent];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(in_view[0], true, "the due-today total and its button are in view on a phone: {in_view}");
    assert!(in_view[1].as_str().unwrap().starts_with("Due today: $20.00"), "{in_view}");
    b.screenshot("upgrade-phone").await;
    b.close().await;
}

/// After a preview was asked for: the quote shows with its lines and how long it holds; Confirm
/// charges exactly the amount shown, on one invoice, and the change reaches the tenant's row.
async fn confirm_pays_exactly_the_preview(
    b: &Browser,
    s: &WithStripe,
    (tenant, customer): (&str, &str),
    what: &'static str,
    applied: impl Fn(&hydra_billing::store::TenantRow) -> bool,
) {
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    let shown = b.text("#preview-total").await;
    assert!(b.text("#preview-lines").await.lines().count() >= 2, "proration lines are listed");
    let expiry = b.text("#preview-expiry").await;
    assert!(expiry.starts_with("This price holds for 10 minutes, until "), "{expiry}");
    b.assert_accessible_and_fits().await;
    b.screenshot(&format!("preview-{what}")).await;
    b.click("#confirm").await;
    b.wait_visible("#change-done", Duration::from_secs(10)).await;
    s.settle(tenant, what, applied).await;
    let invoices = s.get("/v1/invoices", &[("customer", customer)]).await;
    let change: Vec<&Value> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["billing_reason"] == "subscription_update")
        .collect();
    assert_eq!(change.len(), 1, "one invoice for the change: {invoices}");
    let charged = change[0]["amount_due"].as_i64().unwrap();
    assert!(charged > 0, "{what} costs something now");
    assert_eq!(shown, hydra_billing::domain::money::dollars(charged), "the preview is what was charged");
}

/// A tenant on Team monthly with `seats`, paid with 4242, signed in on the upgrade page.
async fn team_subscriber_on_the_upgrade_page(
    tenant: &str,
    seats: &str,
    name: &'static str,
) -> (WithStripe, Browser, String) {
    let s = spawn_site().await;
    let (customer, _) = s.tenant_with_customer(tenant, "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, seats).await;
    s.settle(tenant, "subscribed", |r| r.plan_tier == "team").await;
    let b = browser(&s.app.base, name).await;
    b.sign_in(&s.app.tenant_token(tenant)).await;
    b.goto("/billing/upgrade").await;
    (s, b, customer)
}

#[tokio::test]
async fn a_subscriber_previews_a_seat_change_and_pays_exactly_the_preview() {
    let (s, b, customer) = team_subscriber_on_the_upgrade_page("sub", "3", "seats").await;
    let seats = b.find("#new-seats").await;
    seats.clear().await.unwrap();
    seats.send_keys("5").await.unwrap();
    b.click("#preview-seats").await;
    confirm_pays_exactly_the_preview(&b, &s, ("sub", &customer), "seats", |r| r.stripe_seat_count == Some(5))
        .await;
    b.close().await;
}

#[tokio::test]
async fn a_team_subscriber_previews_business_and_pays_exactly_the_preview() {
    let (s, b, customer) = team_subscriber_on_the_upgrade_page("biz", "2", "to-business").await;
    b.click("#preview-upgrade").await;
    confirm_pays_exactly_the_preview(&b, &s, ("biz", &customer), "business", |r| {
        r.plan_tier == "business" && r.stripe_seat_count == Some(2)
    })
    .await;
    b.goto("/billing").await;
    assert_eq!(b.text("[data-testid=plan-badge]").await, "Business");
    b.close().await;
}

#[tokio::test]
async fn manage_subscription_opens_a_new_portal_session_on_every_click() {
    let s = spawn_site().await;
    s.post("/v1/billing_portal/configurations", &[("features[invoice_history][enabled]", "true")]).await;
    let (customer, _) = s.tenant_with_customer("mgr", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    s.settle("mgr", "subscribed", |r| r.plan_tier == "team").await;
    let b = browser(&s.app.base, "portal").await;
    b.sign_in(&s.app.tenant_token("mgr")).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        b.goto("/billing").await;
        b.click("#manage").await;
        b.wait_until_at(|p| p.starts_with("/portal/"), "the portal").await;
        seen.push(b.path().await);
    }
    assert_ne!(seen[0], seen[1], "each click gets its own portal session");
    b.click("a").await;
    b.wait_for_path("/billing").await;
    // "Update payment method" opens a session deep-linked to the payment method form.
    b.click("#update-card").await;
    b.wait_until_at(|p| p.starts_with("/portal/"), "the portal at the card form").await;
    let session = b.path().await.trim_start_matches("/portal/").to_owned();
    let flow = s.sim().shared.world.lock().await.get(&session).map(|p| p["flow"]["type"].clone());
    assert_eq!(flow, Some(json!("payment_method_update")), "{session}");
    b.close().await;
}

#[tokio::test]
async fn after_30_seconds_without_the_plan_the_success_page_says_what_to_do() {
    // No webhooks reach this app and no worker runs: only the success page's own reconcile could
    // provision the team, and Stripe is gone by then.
    let mut s = crate::helpers::spawn_with_stripe().await;
    s.app.put_tenant("slow", &json!({"name": "Slow"})).await;
    let b = browser(&s.app.base, "slow").await;
    b.sign_in(&s.app.tenant_token("slow")).await;
    let body = json!({"price_id": s.prices.team_monthly, "quantity": 1});
    let started = crate::helpers::json(
        s.call(reqwest::Method::POST, "/api/billing/checkout", "slow", Some(body)).await,
    )
    .await;
    // Paid, and then Stripe is unreachable.
    let session = started["session_id"].as_str().unwrap().to_owned();
    s.post(
        &format!("/v1/test_helpers/checkout/sessions/{session}/complete"),
        &[("payment_method", "pm_card_visa")],
    )
    .await;
    drop(s.simulator.take());
    let opened = Instant::now();
    b.goto(&format!("/billing/success?session_id={session}&plan=team")).await;
    assert!(b.text("#progress").await.contains("Provisioning takes a moment"));
    b.wait_visible("#slow", Duration::from_secs(40)).await;
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_secs(29), "gave up after only {waited:?}");
    assert!(b.hidden("#progress").await, "the spinner stops");
    let slow = b.text("#slow").await;
    assert!(slow.contains(&session), "the message quotes the checkout reference");
    assert!(slow.contains("we couldn't reach Stripe"), "no claim the payment went through: {slow}");
    b.screenshot("success-slow").await;
    b.close().await;
}

#[tokio::test]
async fn every_upgrade_prompt_variant_renders_beside_the_feature_with_its_own_copy_and_link() {
    let app = crate::helpers::spawn_app().await;
    let b = browser(&app.base, "prompt").await;
    b.goto("/billing/upgrade-prompt").await;
    for (reason, says, link) in [
        ("fix_limit", "You've used your 5 free fixes", "/billing/upgrade"),
        ("doc_run_limit", "free doc run", "/billing/upgrade"),
        ("cycle_limit", "5 free Linear cycles", "/billing/upgrade"),
        ("repo_limit", "Team connects up to 5 repositories", "/billing/upgrade?tier=business"),
        ("jira", "Jira comes with Business", "/billing/upgrade?tier=business"),
    ] {
        let shown = b
            .c()
            .execute(
                "const el = document.querySelector(`hydra-upgrade-prompt[reason=${arguments[0]}]`);\
                 const a = el.shadowRoot.querySelector('a');\
                 return [el.shadowRoot.textContent, a.getAttribute('href'), el.getBoundingClientRect().width, window.innerWidth];",
                vec![json!(reason)],
            )
            .await
            .unwrap();
        let text = shown[0].as_str().unwrap();
        assert!(text.contains(says), "{reason}: {text}");
        if reason.ends_with("_limit") && reason != "repo_limit" {
            assert!(text.contains("It resets in 12 days."), "{reason} says when it resets: {text}");
        }
        assert_eq!(shown[1], link, "{reason}");
        assert!(
            shown[2].as_f64().unwrap() < shown[3].as_f64().unwrap() / 2.0,
            "{reason} stays beside the feature"
        );
    }
    // The API's own names (a 402's `metric` or `feature`) give the same prompt; an unknown reason
    // shows nothing rather than a wrong message.
    for (reason, same_as) in [
        ("fix", "fix_limit"),
        ("doc_run", "doc_run_limit"),
        ("linear_cycle", "cycle_limit"),
        ("connected_repos", "repo_limit"),
        ("nonsense", ""),
    ] {
        let texts = b
            .c()
            .execute(
                "const make = r => { const el = document.createElement('hydra-upgrade-prompt');\
                   el.setAttribute('reason', r); el.setAttribute('resets-at', new Date(Date.now() + 5 * 86400000).toISOString());\
                   document.body.append(el); const t = el.shadowRoot.textContent; el.remove(); return t; };\
                 return [make(arguments[0]), arguments[1] ? make(arguments[1]) : ''];",
                vec![json!(reason), json!(same_as)],
            )
            .await
            .unwrap();
        assert_eq!(texts[0], texts[1], "{reason} reads as {same_as:?}");
        if same_as == "repo_limit" {
            assert!(!texts[0].as_str().unwrap().contains("resets"), "repositories do not reset: {texts}");
        }
    }
    b.assert_accessible_and_fits().await;
    b.screenshot("variants").await;
    b.close().await;
}

/// The demo as a newcomer meets it (`hydra-billing demo`, nothing configured): the controls page
/// passes the same accessibility checks, a double click on a clock button moves time once, and the
/// team's billing page follows.
#[tokio::test]
async fn the_demo_controls_work_in_a_browser_and_a_double_click_moves_time_once() {
    let demo = crate::helpers::spawn_demo().await;
    let b = browser(&demo.base, "demo").await;
    b.goto("/demo").await;
    assert!(b.text("[data-testid=summary-globex]").await.starts_with("Team, 3 seats"));
    b.assert_accessible_and_fits().await;
    b.screenshot("controls").await;

    b.find("#clock-tenant").await.select_by_value("globex").await.unwrap();
    b.double_click("button[name=action][value=renewal]").await;
    b.wait_for_path("/billing").await;
    assert_eq!(b.text("[data-testid=plan-badge]").await, "Team");
    b.screenshot("after-renewal").await;

    b.goto("/demo").await;
    let picked = b.find("#clock-tenant").await.prop("value").await.unwrap();
    assert_eq!(picked.as_deref(), Some("globex"), "the picker stays on the team just moved");
    let now = b.text("[data-testid=demo-now]").await;
    let ahead = b.text("#clock-heading + p").await;
    let days: i64 = ahead
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no days-ahead count in {ahead:?}"));
    assert!((27..=31).contains(&days), "one monthly renewal, not two: {days} days ahead ({now})");
    b.close().await;
}

/// The free tier's hard stop as a newcomer finds it in the demo: Acme has 4 of 5 fixes used, so
/// the second "Run a fix" meets the 402, the upgrade prompt shows beside it with the 402's own
/// fields, and "See plans" opens Acme's upgrade page.
#[tokio::test]
async fn in_the_demo_two_clicks_reach_the_free_limit_and_the_upgrade_prompt() {
    let demo = crate::helpers::spawn_demo().await;
    let b = browser(&demo.base, "demo-hard-stop").await;
    b.goto("/demo").await;
    b.click("#run-fix-acme").await;
    b.wait_visible("[data-testid=run-result]", Duration::from_secs(10)).await;
    assert!(b.text("[data-testid=run-result]").await.contains("The fix ran for Acme Robotics"));
    assert!(b.text("[data-testid=summary-acme]").await.contains("Fixes 5/5"));
    b.click("#run-fix-acme").await;
    b.wait_visible("hydra-upgrade-prompt", Duration::from_secs(10)).await;
    let result = b.text("[data-testid=run-result]").await;
    assert!(result.contains("got a 402 from the service: you have used 5 of 5 free fixes"), "{result}");
    let prompt = b
        .c()
        .execute("return document.querySelector('hydra-upgrade-prompt').shadowRoot.textContent;", vec![])
        .await
        .unwrap();
    let prompt = prompt.as_str().unwrap_or_default();
    assert!(prompt.contains("You've used your 5 free fixes") && prompt.contains("It resets in"), "{prompt}");
    b.assert_accessible_and_fits().await;
    b.screenshot("limit-reached").await;
    b.c()
        .execute(
            "document.querySelector('hydra-upgrade-prompt').shadowRoot.querySelector('a').click();",
            vec![],
        )
        .await
        .unwrap();
    b.wait_for_path("/billing/upgrade").await;
    assert!(b.text("main").await.contains("Acme Robotics"), "the prompt leads to Acme's own upgrade page");
    b.close().await;
}

/// Issue: a stale preview was charged. Editing the seats after a preview discards it (and says
/// so), so "Confirm" can only apply what is on screen; the preview says what is due today, what
/// the plan costs from the next renewal and which card pays; the confirmation names the result.
/// At a phone's width too.
#[tokio::test]
async fn an_edit_after_a_preview_discards_it_and_confirm_applies_only_what_is_shown() {
    let (s, b, customer) = team_subscriber_on_the_upgrade_page("stale", "3", "stale-preview").await;
    // At a desktop's width first: a preview, then an edit that discards it.
    let seats = b.find("#new-seats").await;
    seats.clear().await.unwrap();
    seats.send_keys("4").await.unwrap();
    b.click("#preview-seats").await;
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    seats.send_keys("\u{0008}5").await.unwrap();
    assert!(b.hidden("#preview").await, "an edit hides the old preview");
    b.assert_accessible_and_fits().await;
    // Then on a phone, the whole path to a confirmed change.
    b.c().set_window_size(390, 844).await.unwrap();
    seats.clear().await.unwrap();
    seats.send_keys("6").await.unwrap();
    b.click("#preview-seats").await;
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    assert_eq!(b.text("[data-testid=preview-summary]").await, "3 to 6 seats");
    seats.send_keys("\u{0008}8").await.unwrap();
    assert!(b.hidden("#preview").await, "an edit hides the old preview");
    let note = b.text("[data-testid=preview-discarded]").await;
    assert!(note.contains("The preview for 6 seats was discarded because the seats changed"), "{note}");
    assert!(!b.find("#confirm").await.is_displayed().await.unwrap(), "nothing to confirm");

    // Enter in the seats box previews; it never applies anything.
    seats.send_keys("\u{E007}").await.unwrap();
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    assert_eq!(b.text("[data-testid=preview-summary]").await, "3 to 8 seats");
    let due = b.text("#preview-total").await;
    let next = b.text("[data-testid=preview-next]").await;
    assert_eq!(next, "$160.00 per month (8 × $20.00)", "the recurring total after the change");
    let from = b.text("#preview-next-label").await;
    assert!(from.starts_with("From "), "{from}");
    assert_eq!(b.text("[data-testid=preview-card]").await, "Visa •4242");
    assert_eq!(b.text("#confirm").await, format!("Confirm and pay {due}"));
    b.assert_accessible_and_fits().await;
    b.screenshot("preview-increase-phone").await;
    b.click("#confirm").await;
    b.wait_visible("#change-done", Duration::from_secs(10)).await;
    let done = b.text("#change-done").await;
    assert!(done.starts_with(&format!("Done: 8 seats · {due} charged to Visa •4242.")), "{done}");
    s.settle("stale", "8 seats", |r| r.stripe_seat_count == Some(8)).await;
    let invoices = s.get("/v1/invoices", &[("customer", customer.as_str())]).await;
    let updates = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["billing_reason"] == "subscription_update")
        .count();
    assert_eq!(updates, 1, "one change, the one shown");
    b.close().await;
}

/// Issue: a decrease hid its credit. 6 to 2 seats: nothing due today, the credit said in words,
/// the button says "Confirm change", and "Discard preview" returns focus to the seats box.
#[tokio::test]
async fn a_seat_decrease_says_nothing_is_due_and_names_its_credit() {
    let (s, b, _) = team_subscriber_on_the_upgrade_page("down", "6", "decrease").await;
    let seats = b.find("#new-seats").await;
    seats.clear().await.unwrap();
    seats.send_keys("2").await.unwrap();
    b.click("#preview-seats").await;
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    assert_eq!(b.text("#preview-total").await, "$0.00");
    let credit = b.text("[data-testid=preview-credit]").await;
    assert!(
        credit.starts_with("Nothing to pay today; $")
            && credit.ends_with(" credit goes to your next invoices."),
        "{credit}"
    );
    assert_eq!(b.text("#confirm").await, "Confirm change");
    assert!(b.hidden("#preview-card-row").await, "no card is charged");
    assert_eq!(b.text("[data-testid=preview-next]").await, "$40.00 per month (2 × $20.00)");
    b.assert_accessible_and_fits().await;
    b.screenshot("preview-decrease").await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.screenshot("preview-decrease-phone").await;
    b.c().set_window_size(1200, 1000).await.unwrap();
    b.click("#discard").await;
    assert!(b.hidden("#preview").await);
    let focused = b.c().execute("return document.activeElement.id", vec![]).await.unwrap();
    assert_eq!(focused, "new-seats", "focus goes back to where the change started");
    b.click("#preview-seats").await;
    b.wait_visible("#preview", Duration::from_secs(10)).await;
    b.click("#confirm").await;
    b.wait_visible("#change-done", Duration::from_secs(10)).await;
    let done = b.text("#change-done").await;
    assert!(done.starts_with("Done: 2 seats · Nothing charged; $"), "{done}");
    s.settle("down", "2 seats", |r| r.stripe_seat_count == Some(2)).await;
    b.close().await;
}

/// Issue: the Business card showed no price until previewed; a free team got "Manage
/// subscription" (an empty portal); a mistyped page address showed JSON; no favicon.
#[tokio::test]
async fn prices_show_before_a_preview_and_free_teams_get_no_empty_portal() {
    let (s, b, _) = team_subscriber_on_the_upgrade_page("shown", "3", "business-price").await;
    let price = b.text("[data-testid=business-price]").await;
    assert!(price.starts_with("Business: 3 × $40.00 = $120.00 per month"), "{price}");

    let (customer, _) = s.tenant_with_customer("never", "pm_card_visa").await;
    assert!(!customer.is_empty());
    b.sign_in(&s.app.tenant_token("never")).await;
    b.goto("/billing").await;
    let buttons = b
        .c()
        .execute(
            "return [...document.querySelectorAll('.actions .button')].map(e => e.textContent.trim())",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(buttons, json!(["Upgrade"]), "a team that never subscribed has nothing in the portal");
    let icon = b.c().execute("return document.querySelector('link[rel=icon]').href", vec![]).await.unwrap();
    let icon = s.app.client.get(icon.as_str().unwrap()).send().await.unwrap();
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");

    b.goto("/billing/success?session_id=bogus123&plan=team").await;
    assert_eq!(b.text("h1").await, "We couldn't find that checkout");
    b.goto("/billing/upgrad").await;
    assert_eq!(b.text("h1").await, "Page not found");
    assert!(b.text("main").await.contains("Go to Plan & usage"));
    b.assert_accessible_and_fits().await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    let api = s.app.client.get(s.app.url("/api/nothing-here")).send().await.unwrap();
    assert_eq!(api.status(), 404);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "programs still get the error shape");
    b.close().await;
}

/// Issue: leaving Checkout lost the choices. Business, annual, 4 seats, then "Cancel" on Stripe's
/// page: back on the upgrade page with the same choices and a word that nothing was charged.
#[tokio::test]
async fn leaving_checkout_keeps_the_choices_and_says_nothing_was_charged() {
    let (_s, b) = free_team_signed_in("leaver", "Leaver", "checkout-left").await;
    b.goto("/billing/upgrade").await;
    choose(&b, "business", true, "4").await;
    b.click("#checkout").await;
    b.wait_for_checkout().await;
    b.c().find(fantoccini::Locator::LinkText("Cancel")).await.unwrap().click().await.unwrap();
    b.wait_for_path("/billing/upgrade").await;
    let picked = upgrade_choices(&b).await;
    assert_eq!(picked, json!(["business", "year", "4"]));
    let notice = b.text(".notice").await;
    assert!(notice.contains("You left checkout, so nothing was charged"), "{notice}");
    b.assert_accessible_and_fits().await;
    b.screenshot("back-from-checkout").await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.close().await;
}

/// Issue: cancellation was a dead end. A subscription set to cancel says "Cancels on …" and offers
/// "Resume subscription" (no "Change seats or plan" leading nowhere); one click takes the
/// cancellation back in Stripe and the page says "Renews on" again. A second resume is a 409.
#[tokio::test]
async fn a_cancelling_subscription_says_when_it_ends_and_resumes_in_one_click() {
    let s = spawn_site().await;
    let (customer, _) = s.tenant_with_customer("leaving", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.team_monthly, "2").await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    s.settle("leaving", "subscribed", |r| r.plan_tier == "team").await;
    s.post(&format!("/v1/subscriptions/{sub_id}"), &[("cancel_at_period_end", "true")]).await;
    s.settle("leaving", "set to cancel", |r| r.cancel_at_period_end).await;
    let b = browser(&s.app.base, "resume").await;
    b.sign_in(&s.app.tenant_token("leaving")).await;
    b.goto("/billing").await;
    let renewal = b.text("[data-testid=renewal]").await;
    assert_eq!(b.text("[data-testid=renewal-label]").await, "Cancels on", "the date it ends: {renewal}");
    assert!(b.text(".notice").await.contains("Resume it to keep Team."));
    assert!(b.c().find(fantoccini::Locator::LinkText("Change seats or plan")).await.is_err());
    b.assert_accessible_and_fits().await;
    b.screenshot("cancelling").await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.screenshot("cancelling-phone").await;
    b.click("#resume").await;
    let renewed = eventually(Duration::from_secs(10), async || {
        // Read in one script: the page reloads under us, and an element found before the reload
        // is stale after it.
        let label = b
            .c()
            .execute("const e = document.querySelector('[data-testid=renewal-label]'); return e ? e.textContent : null;", vec![])
            .await
            .ok();
        b.ready().await && label == Some(json!("Renews on"))
    })
    .await;
    assert!(renewed, "the page says it renews again: {}", b.text("main").await);
    assert_eq!(b.text("[data-testid=renewal]").await, renewal, "on the same date");
    let live = s.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(live["cancel_at_period_end"], false, "Stripe has it renewing");
    assert!(!s.app.db.tenant("leaving").await.unwrap().unwrap().cancel_at_period_end);
    let again = s
        .app
        .client
        .post(s.app.url("/api/billing/resume"))
        .bearer_auth(s.app.tenant_token("leaving"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "nothing left to resume");
    let member = s
        .app
        .client
        .post(s.app.url("/api/billing/resume"))
        .bearer_auth(s.app.tenant_token_with("leaving", hydra_billing::http::auth::Role::Member, 600))
        .send()
        .await
        .unwrap();
    assert_eq!(member.status(), 403, "only a billing admin changes billing");
    b.close().await;
}

/// Issue: past due and lapsed were thin. A renewal whose payment fails: the badge says "Past due",
/// the page says what is owed and by when, and "Update payment method" is there. Past the grace
/// period (Stripe gives up): the page says the plan ended and why, and "Restore Team, 2 seats"
/// opens the upgrade page set to exactly that. Both at desktop and phone widths.
#[tokio::test]
async fn past_due_and_lapsed_pages_say_what_is_owed_and_restore_the_plan_in_one_step() {
    let s = spawn_site().await;
    let (customer, clock) = s.tenant_with_customer("late", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.team_monthly, "2").await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    s.settle("late", "subscribed", |r| r.plan_tier == "team").await;
    s.card_starts_failing(&customer, &sub_id).await;
    let end = s.app.tenant("late").await.stripe_current_period_end.unwrap();
    s.advance(&clock, end + 3600 + 60).await;
    s.app.clock.set(end + 3600 + 60);
    s.settle("late", "past due", |r| r.stripe_subscription_status.as_deref() == Some("past_due")).await;

    let b = browser(&s.app.base, "states").await;
    b.sign_in(&s.app.tenant_token("late")).await;
    b.goto("/billing").await;
    assert_eq!(b.text("[data-testid=past-due-badge]").await, "Past due");
    assert_eq!(b.text("[data-testid=owed]").await, "$40.00");
    assert_eq!(b.text("[data-testid=renewal-label]").await, "Pay by");
    assert!(b.find("#update-card").await.is_displayed().await.unwrap());
    b.assert_accessible_and_fits().await;
    b.screenshot("past-due").await;
    b.c().set_window_size(390, 844).await.unwrap();
    b.assert_accessible_and_fits().await;
    b.screenshot("past-due-phone").await;

    // Stripe's retries run out and it cancels; our grace period has ended too.
    s.advance(&clock, end + 3600 + 8 * crate::helpers::DAY).await;
    s.app.clock.set(end + 3600 + 8 * crate::helpers::DAY);
    s.settle("late", "cancelled", |r| r.stripe_subscription_status.as_deref() == Some("canceled")).await;
    // A week later on the service's clock: a new sign-in (tokens last an hour).
    b.sign_in(&s.app.tenant_token("late")).await;
    b.goto("/billing").await;
    assert_eq!(b.text("[data-testid=plan-badge]").await, "Free");
    let notice = b.text(".notice").await;
    // The date the service saw the cancellation: between the failed renewal and now (the event
    // may be processed before or after the test moves the service's clock).
    let said = (0..=9).any(|d| {
        let day = chrono::DateTime::from_timestamp(end + d * crate::helpers::DAY, 0).unwrap();
        notice.contains(&format!("was cancelled on {} because its payments failed", day.format("%-d %B %Y")))
    });
    assert!(said, "{notice}");
    assert_eq!(b.text("[data-testid=restore]").await, "Restore Team, 2 seats");
    b.assert_accessible_and_fits().await;
    b.screenshot("lapsed-phone").await;
    b.c().set_window_size(1200, 1000).await.unwrap();
    b.screenshot("lapsed").await;
    b.click("[data-testid=restore]").await;
    b.wait_for_path("/billing/upgrade").await;
    let picked = upgrade_choices(&b).await;
    assert_eq!(picked, json!(["team", "month", "2"]));
    b.close().await;
}
