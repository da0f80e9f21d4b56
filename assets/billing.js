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
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      if (button.disabled || busy.has(button)) return;
      // Read now: a page may relabel the button between clicks ("Confirm and pay $40.00").
      const label = button.textContent;
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
    const resume = $("resume");
    if (resume) {
      busyButton(resume, "Resuming…", async () => {
        hide(error);
        try {
          await api("POST", "/api/billing/resume");
          window.location.reload();
          return true;
        } catch (e) {
          show(error, e.message);
          return false;
        }
      });
    }
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
      // Each plan's price in the chosen period: annual as its monthly equivalent and the yearly bill.
      for (const option of form.querySelectorAll('input[name="tier"][data-monthly-cents]')) {
        const price = option.parentElement.querySelector(".tier-price");
        const yearly = Number(option.dataset.annualCents);
        price.textContent = annual
          ? `${dollars(Math.round(yearly / 12))} per seat / month, billed ${dollars(yearly)} yearly`
          : `${dollars(Number(option.dataset.monthlyCents))} per seat / month`;
      }
      if (!paid) {
        total.textContent = "Free: 5 fixes, 1 doc run and 5 Linear cycles every 30 days. Nothing to pay.";
      } else if (quantity !== null) {
        const monthly = Number(tier.dataset.monthlyCents);
        const annualCents = Number(tier.dataset.annualCents);
        if (annual) {
          const saving = (monthly * 12 - annualCents) * quantity;
          total.textContent = `Due today: ${dollars(annualCents * quantity)} (${seatWord(quantity)} × ` +
            `${dollars(annualCents)} per seat per year). You save ${dollars(saving)} a year (20%) against monthly.`;
        } else {
          total.textContent = `Due today: ${dollars(monthly * quantity)} (${seatWord(quantity)} × ` +
            `${dollars(monthly)} per seat per month), then monthly.`;
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

  // "30 December 2026", in UTC like the server's dates.
  function longDate(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" :
      d.toLocaleDateString("en-GB", { day: "numeric", month: "long", year: "numeric", timeZone: "UTC" });
  }

  function seatWord(n) {
    return `${n} seat${n === 1 ? "" : "s"}`;
  }

  // Upgrade for a subscriber: preview a seat or tier change, then confirm that exact quote. Any
  // edit after a preview discards it, so the button can only ever apply what is on screen.
  function changeForms() {
    const preview = $("preview");
    if (!preview) return;
    const error = $("change-error");
    const done = $("change-done");
    const discarded = $("preview-discarded");
    const confirm = $("confirm");
    const newSeats = $("new-seats");
    let pending = null; // { kind: "seats" | "upgrade", quote }

    function discard(note) {
      pending = null;
      preview.hidden = true;
      if (note) show(discarded, note); else hide(discarded);
    }

    function showRow(id, text) {
      $(id).textContent = text;
      $(`${id}-row`).hidden = !text;
    }

    async function previewChange(kind, body) {
      hide(error);
      hide(done);
      discard();
      try {
        const quote = await api("POST", `/api/billing/${kind}`, body);
        pending = { kind, quote };
        const current = Number(newSeats.dataset.current);
        $("preview-summary").textContent = kind === "upgrade"
          ? `Team to Business, ${seatWord(quote.quantity)}`
          : `${current} to ${seatWord(quote.quantity)}`;
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
        const due = quote.amount_due || 0;
        $("preview-total").textContent = dollars(due);
        const next = quote.next;
        $("preview-next-label").textContent = next ? `From ${longDate(next.from)}` : "Then";
        showRow("preview-next", next
          ? `${dollars(next.amount)} per ${next.interval} (${next.quantity} × ${dollars(next.unit_amount)})`
          : "");
        showRow("preview-card", due > 0 && quote.card ? quote.card : "");
        const credit = $("preview-credit");
        if (due === 0 && quote.credit > 0) {
          show(credit, `Nothing to pay today; ${dollars(quote.credit)} credit goes to your next invoices.`);
        } else {
          hide(credit);
        }
        confirm.textContent = due > 0 ? `Confirm and pay ${dollars(due)}` : "Confirm change";
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
        discard();
        show(error, e.message);
      }
      return false;
    }

    const seatsForm = $("seats-form");
    // Enter in the seats box previews (it never applies anything).
    seatsForm.addEventListener("submit", (event) => {
      event.preventDefault();
      $("preview-seats").click();
    });
    newSeats.addEventListener("input", () => {
      if (pending) {
        discard(`The preview for ${seatWord(pending.quote.quantity)} was discarded because the seats changed. ` +
          "Preview again to see the new price.");
      }
    });
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

    busyButton(confirm, "Confirming…", async () => {
      if (!pending) return false;
      const { kind, quote } = pending;
      hide(error);
      try {
        await api("POST", `/api/billing/${kind}`, { quote_id: quote.quote_id, confirm: true });
        preview.hidden = true;
        pending = null;
        const what = kind === "upgrade" ? `Business, ${seatWord(quote.quantity)}` : seatWord(quote.quantity);
        const due = quote.amount_due || 0;
        const paid = due > 0
          ? `${dollars(due)} charged${quote.card ? ` to ${quote.card}` : ""}.`
          : quote.credit > 0 ? `Nothing charged; ${dollars(quote.credit)} credit goes to your next invoices.`
            : "Nothing charged.";
        show(done, `Done: ${what} · ${paid} Your plan page shows it in a moment.`);
        setTimeout(() => window.location.assign("/billing"), 2500);
        return true;
      } catch (e) {
        show(error, e.message);
        return false;
      }
    });
    $("discard").addEventListener("click", () => {
      discard();
      // Back where the change started, not to the top of the page.
      newSeats.focus();
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
          // What was bought, from our own status (the same numbers Plan & usage shows).
          if (status.seat_count && status.interval) {
            $("bought-seats").textContent = String(status.seat_count);
            $("bought-billing").textContent = status.interval === "year" ? "Annual" : "Monthly";
            $("bought-price").textContent = status.recurring_amount == null ? "" :
              `${dollars(status.recurring_amount)} per ${status.interval}`;
            $("bought-renews").textContent = longDate(status.current_period_end);
            $("bought").hidden = false;
          }
          $("receipt").hidden = false;
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
