// hydra-billing pages: the little behaviour the server-rendered pages need. Plain script, no build
// step. It only calls the tenant API on this origin with the session cookie, sends JSON (the
// server's cross-site rule), and shows the API's own error message when a call fails.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // Integer cents to "$1,234.50" / "-$1.50", as the server writes them (src/money.rs).
  function dollars(cents) {
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(cents);
    const whole = Math.floor(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${sign}$${whole}.${String(abs % 100).padStart(2, "0")}`;
  }

  function sentence(text) {
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  // One API call; a failure throws an Error carrying the API's message.
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body || {});
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new Error("We couldn't reach the billing service. Check your connection and try again.");
    }
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON: handled below */ }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new Error(message ? sentence(message) : `The request failed (HTTP ${response.status}).`);
    }
    return data;
  }

  function show(el, text) {
    el.textContent = text;
    el.hidden = false;
  }

  function hide(el) {
    el.hidden = true;
    el.textContent = "";
  }

  // Buttons whose call is in flight (or which navigated away): nothing else may re-enable them.
  const busy = new WeakSet();

  // A button that works once at a time: disabled from the first click until the call ends, so a
  // double click can never send two requests.
  function busyButton(button, busyLabel, work) {
    const label = button.textContent;
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      if (button.disabled || busy.has(button)) return;
      busy.add(button);
      button.disabled = true;
      button.textContent = busyLabel;
      const keepDisabled = await work().catch(() => false);
      if (!keepDisabled) {
        busy.delete(button);
        button.disabled = false;
        button.textContent = label;
      }
    });
  }

  // Back from Checkout or the portal, a page restored from the back/forward cache would keep its
  // buttons busy forever: load it afresh instead (these pages are never cached otherwise).
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  // Settings: "Manage subscription" and "Update payment method" ask for a new portal session on
  // every click (the second opens it at the payment method form).
  function settingsPage() {
    const error = $("manage-error");
    document.querySelectorAll("button[data-portal]").forEach((button) => {
      const flow = button.dataset.portal;
      busyButton(button, "Opening the portal…", async () => {
        hide(error);
        try {
          const { url } = await api("POST", "/api/billing/portal", flow ? { flow } : {});
          window.location.assign(url);
          return true;
        } catch (e) {
          show(error, e.message);
          return false;
        }
      });
    });
  }

  function seatsValue(input) {
    const n = Number(input.value);
    return Number.isInteger(n) && n >= 1 && n <= 500 ? n : null;
  }

  // Upgrade for a free tenant: tier, seats and interval make a price; the button opens Checkout.
  function checkoutForm(form) {
    const seats = $("seats");
    const seatsError = $("seats-error");
    const total = $("total");
    const button = $("checkout");
    const error = $("checkout-error");
    const allowed = !button.disabled;

    function choice() {
      const tier = form.querySelector('input[name="tier"]:checked');
      const annual = form.querySelector('input[name="interval"]:checked').value === "year";
      return { tier, annual, quantity: seatsValue(seats) };
    }

    function update() {
      const { tier, annual, quantity } = choice();
      if (quantity === null) {
        show(seatsError, "Seats must be a whole number from 1 to 500.");
        seats.setAttribute("aria-invalid", "true");
      } else {
        hide(seatsError);
        seats.removeAttribute("aria-invalid");
      }
      const paid = tier && tier.value !== "free";
      if (!paid) {
        total.textContent = "Free: 5 fixes, 1 doc run and 5 Linear cycles every 30 days. Nothing to pay.";
      } else if (quantity !== null) {
        const monthly = Number(tier.dataset.monthlyCents);
        const annualCents = Number(tier.dataset.annualCents);
        if (annual) {
          const saving = (monthly * 12 - annualCents) * quantity;
          total.textContent = `${quantity} × ${dollars(annualCents)} = ${dollars(annualCents * quantity)} per year. ` +
            `You save ${dollars(saving)} a year (20%) against monthly.`;
        } else {
          total.textContent = `${quantity} × ${dollars(monthly)} = ${dollars(monthly * quantity)} per month.`;
        }
      } else {
        total.textContent = "";
      }
      button.disabled = busy.has(button) || !allowed || !paid || quantity === null;
    }

    form.addEventListener("input", update);
    form.addEventListener("change", update);
    form.addEventListener("submit", (event) => event.preventDefault());
    busyButton(button, "Opening checkout…", async () => {
      hide(error);
      const { tier, annual, quantity } = choice();
      if (!tier || tier.value === "free" || quantity === null) return false;
      const priceId = annual ? tier.dataset.annualPrice : tier.dataset.monthlyPrice;
      try {
        const { url } = await api("POST", "/api/billing/checkout", { price_id: priceId, quantity });
        window.location.assign(url);
        return true;
      } catch (e) {
        show(error, e.message);
        return false;
      }
    });
    update();
  }

  // Upgrade for a subscriber: preview a seat or tier change, then confirm that exact quote.
  function changeForms() {
    const preview = $("preview");
    if (!preview) return;
    const error = $("change-error");
    const done = $("change-done");
    let pending = null; // { kind: "seats" | "upgrade", quote }

    async function previewChange(kind, body) {
      hide(error);
      hide(done);
      try {
        const quote = await api("POST", `/api/billing/${kind}`, body);
        pending = { kind, quote };
        const lines = $("preview-lines");
        lines.replaceChildren();
        for (const line of quote.lines || []) {
          const row = document.createElement("tr");
          const what = document.createElement("td");
          what.textContent = line.description || "Change";
          const amount = document.createElement("td");
          amount.className = "num";
          amount.textContent = dollars(line.amount || 0);
          row.append(what, amount);
          lines.append(row);
        }
        $("preview-total").textContent = dollars(quote.amount_due || 0);
        // Counted from now on this browser's clock, not from the server's timestamp: the two
        // clocks can disagree (the demo's server runs days ahead).
        const ttl = Number(preview.dataset.ttlSecs) || 0;
        const until = new Date(Date.now() + ttl * 1000);
        $("preview-expiry").textContent = ttl <= 0 ? "" :
          `This price holds for ${Math.round(ttl / 60)} minutes, until ` +
          `${until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}.`;
        preview.hidden = false;
        preview.focus();
      } catch (e) {
        pending = null;
        preview.hidden = true;
        show(error, e.message);
      }
      return false;
    }

    const seatsForm = $("seats-form");
    const newSeats = $("new-seats");
    seatsForm.addEventListener("submit", (event) => event.preventDefault());
    busyButton($("preview-seats"), "Pricing…", async () => {
      const quantity = seatsValue(newSeats);
      if (quantity === null) {
        show(error, "Seats must be a whole number from 1 to 500.");
        return false;
      }
      if (String(quantity) === newSeats.dataset.current) {
        show(error, "That is your current number of seats.");
        return false;
      }
      return previewChange("seats", { quantity });
    });
    const upgrade = $("preview-upgrade");
    if (upgrade) busyButton(upgrade, "Pricing…", () => previewChange("upgrade", { tier: "business" }));

    busyButton($("confirm"), "Confirming…", async () => {
      if (!pending) return false;
      hide(error);
      try {
        await api("POST", `/api/billing/${pending.kind}`, { quote_id: pending.quote.quote_id, confirm: true });
        preview.hidden = true;
        show(done, `Done. ${dollars(pending.quote.amount_due || 0)} was charged; your plan shows the change in a moment.`);
        pending = null;
        setTimeout(() => window.location.assign("/billing"), 2500);
        return true;
      } catch (e) {
        show(error, e.message);
        return false;
      }
    });
    $("discard").addEventListener("click", () => {
      pending = null;
      preview.hidden = true;
    });
  }

  function upgradePage() {
    const form = $("checkout-form");
    if (form) checkoutForm(form);
    changeForms();
  }

  // After Checkout: poll our own status every 2 s until the plan is on, for at most 30 s.
  function successPage() {
    const box = $("provisioning");
    if (!box) return;
    const every = Number(box.dataset.pollMs) || 2000;
    const giveUpAt = Date.now() + (Number(box.dataset.giveUpMs) || 30000);
    const labels = { team: "Team", business: "Business", enterprise: "Enterprise" };

    async function poll() {
      try {
        const status = await api("GET", "/api/billing/status");
        const label = labels[status.plan_tier];
        if (label) {
          $("tier-name").textContent = label;
          $("done-tier").textContent = label;
          $("progress").hidden = true;
          $("done").hidden = false;
          return;
        }
      } catch (_) { /* keep trying until the deadline */ }
      if (Date.now() >= giveUpAt) {
        $("progress").hidden = true;
        $("slow").hidden = false;
        return;
      }
      setTimeout(poll, every);
    }
    poll();
  }

  // Demo controls: plain form posts, each sent once. A double click on "Go to the next renewal"
  // would otherwise post twice and move the clock two periods.
  function demoPage() {
    for (const form of document.querySelectorAll("form")) {
      form.addEventListener("submit", (event) => {
        if (form.dataset.sent) event.preventDefault();
        form.dataset.sent = "1";
      });
    }
  }

  const pages = { settings: settingsPage, upgrade: upgradePage, success: successPage, demo: demoPage };
  const run = pages[document.body.dataset.page];
  if (run) run();
})();
