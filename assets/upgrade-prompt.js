// <hydra-upgrade-prompt reason="…" resets-at="…" upgrade-url="…">: shown beside a locked feature
// in Hydra's pages, never over the whole UI. It makes no API calls (the page knows why the
// feature is locked) and writes only text nodes, so no attribute can inject markup.
(() => {
  const COPY = {
    fix_limit: {
      title: "You've used your 5 free fixes",
      body: "Fixes come back when your 30-day window resets.",
      resets: true,
      gain: "Team and Business run unlimited fixes.",
    },
    doc_run_limit: {
      title: "You've used this window's free doc run",
      body: "Your next doc run is free once the 30-day window resets.",
      resets: true,
      gain: "Team and Business run unlimited doc runs.",
    },
    cycle_limit: {
      title: "You've used your 5 free Linear cycles",
      body: "Cycles come back when your 30-day window resets.",
      resets: true,
      gain: "Team and Business run unlimited Linear cycles.",
    },
    repo_limit: {
      title: "Team connects up to 5 repositories",
      body: "The repositories you've connected keep working.",
      gain: "Business connects as many repositories as you need.",
      tier: "business",
    },
    jira: {
      title: "Jira comes with Business",
      body: "Your workflows keep running as they are.",
      gain: "Business adds Jira, audit logs, usage reporting and the priority fix queue.",
      tier: "business",
    },
  };

  // The API's own names work too, so Hydra can pass a 402's `metric` (free_tier_limit_reached)
  // or `feature` (feature_not_in_plan, access) straight through.
  const ALIASES = { fix: "fix_limit", doc_run: "doc_run_limit", linear_cycle: "cycle_limit", connected_repos: "repo_limit" };

  const STYLE = `
    :host { display: inline-block; max-width: 28rem; font: 14px/1.4 system-ui, sans-serif; }
    .box { border: 1px solid #c9d3e0; border-radius: 8px; padding: 12px 14px; background: #f6f9fc; color: #1a1f36; }
    .title { font-weight: 600; margin: 0 0 4px; }
    p { margin: 0 0 6px; }
    a { display: inline-block; margin-top: 4px; padding: 6px 12px; border-radius: 6px; background: #2c4bd1;
        color: #fff; text-decoration: none; font-weight: 600; }
    a:focus-visible { outline: 3px solid #1a1f36; outline-offset: 2px; }`;

  function when(iso) {
    const date = iso ? new Date(iso) : null;
    if (!date || isNaN(date)) return "";
    const days = Math.max(0, Math.ceil((date - Date.now()) / 86400000));
    return days === 0 ? "It resets today." : `It resets in ${days} day${days === 1 ? "" : "s"}.`;
  }

  class HydraUpgradePrompt extends HTMLElement {
    static get observedAttributes() { return ["reason", "resets-at", "upgrade-url"]; }
    connectedCallback() { this.render(); }
    attributeChangedCallback() { this.render(); }
    render() {
      const reason = this.getAttribute("reason");
      const copy = COPY[ALIASES[reason] || reason];
      const root = this.shadowRoot || this.attachShadow({ mode: "open" });
      root.replaceChildren();
      if (!copy) {
        // Nothing shown beats a wrong message, but whoever wrote the page should hear of it.
        if (reason !== null) console.warn(`hydra-upgrade-prompt: unknown reason "${reason}"`);
        return;
      }
      const style = document.createElement("style");
      style.textContent = STYLE;
      const box = document.createElement("div");
      box.className = "box";
      box.setAttribute("role", "note");
      const title = document.createElement("p");
      title.className = "title";
      title.textContent = copy.title;
      const body = document.createElement("p");
      body.textContent = [copy.body, copy.resets ? when(this.getAttribute("resets-at")) : ""]
        .filter(Boolean).join(" ");
      const gain = document.createElement("p");
      gain.textContent = copy.gain;
      const link = document.createElement("a");
      // Only a same-site path or an https URL; anything else falls back to the upgrade page.
      // Repositories and Jira come with Business, so the upgrade page opens with Business chosen.
      const fallback = copy.tier === "business" ? "/billing/upgrade?tier=business" : "/billing/upgrade";
      const wanted = this.getAttribute("upgrade-url") || fallback;
      link.href = /^(\/(?!\/)|https:\/\/)/.test(wanted) ? wanted : fallback;
      link.textContent = "See plans";
      box.append(title, body, gain, link);
      root.append(style, box);
    }
  }

  if (!customElements.get("hydra-upgrade-prompt")) {
    customElements.define("hydra-upgrade-prompt", HydraUpgradePrompt);
  }
})();
