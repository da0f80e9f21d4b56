#!/usr/bin/env python3
"""What promtool cannot know about deploy/: that every PromQL expression (alert rules and
dashboard) names only metrics the service exports, that every alert sends the operator to a
section docs/runbooks.md has, that every alert has a firing and a quiet unit test, and that the
Grafana dashboard is importable. Run by scripts/check-deploy."""

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
# The titles an alert may send the operator to.
RUNBOOK_SECTIONS = set(re.findall(r"^## (.+?)\s*$", (DEPLOY.parent / "docs/runbooks.md").read_text(), re.M))

# The service's /metrics (names are final), plus Prometheus' own `up`.
KNOWN_METRICS = {
    "hydra_stripe_events",
    "hydra_stripe_event_oldest_unprocessed_age_seconds",
    "hydra_webhooks_total",
    "hydra_stripe_calls_total",
    "hydra_reconcile_drift_total",
    "hydra_double_subscriptions_total",
    "hydra_job_runs_total",
    "hydra_job_last_success_timestamp_seconds",
    "hydra_job_cadence_seconds",
    "hydra_email_outbox",
    "hydra_email_outbox_oldest_pending_age_seconds",
    "hydra_http_requests_total",
    "hydra_http_request_duration_seconds_bucket",
    "hydra_http_request_duration_seconds_sum",
    "hydra_http_request_duration_seconds_count",
    "hydra_db_connections_discarded_total",
    "up",
}

FUNCTIONS = set("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
deg delta deriv exp floor histogram_count histogram_fraction histogram_quantile histogram_sum
holt_winters hour idelta increase irate label_join label_replace last_over_time ln log10 log2
max_over_time min_over_time minute month pi predict_linear present_over_time quantile_over_time
rad rate resets round scalar sgn sin sinh sort sort_desc sqrt stddev_over_time stdvar_over_time
sum_over_time tan tanh time timestamp vector year
""".split())
AGGREGATIONS = set("sum min max avg group stddev stdvar count count_values bottomk topk quantile".split())
KEYWORDS = set("and or unless bool offset atan2 inf nan".split())


def metric_names(expr):
    """The metric names an expression selects, and the unknown functions it calls."""
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", expr)  # Grafana variables ($__rate_interval, ${datasource})
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b(?:group_left|group_right)\b", " ", s)
    s = re.sub(r"(?<![\w:.])\d[\w.]*", " ", s)  # numbers and durations (5m, 0.99, 1e3)
    names, unknown_calls = set(), set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", s):
        word = m.group(0)
        called = s[m.end():].lstrip().startswith("(")
        if word in KEYWORDS or word in AGGREGATIONS:
            continue
        if called and word in FUNCTIONS:
            continue
        if called:
            unknown_calls.add(word)
        else:
            names.add(word)
    return names, unknown_calls


def check_expr(where, expr, errors):
    names, calls = metric_names(expr)
    if not names:
        errors.append(f"{where}: no metric found in {expr!r}")
    for n in sorted(names - KNOWN_METRICS):
        errors.append(f"{where}: unknown metric {n!r} in {expr!r}")
    for c in sorted(calls):
        errors.append(f"{where}: unknown function {c!r} in {expr!r}")


def check_rules(errors):
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    alerts = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            check_expr(f"alerts.yml {name}", rule["expr"], errors)
            if "alert" not in rule:
                continue
            sev = rule.get("labels", {}).get("severity")
            if sev not in ("warning", "critical"):
                errors.append(f"alerts.yml {name}: severity {sev!r}, not warning or critical")
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook"):
                if not ann.get(key):
                    errors.append(f"alerts.yml {name}: no {key} annotation")
            named = re.findall(r'section "([^"]+)"', ann.get("description", "") + ann.get("runbook", ""))
            if not re.search(r'section "[^"]+"', ann.get("runbook", "")):
                errors.append(f"alerts.yml {name}: the runbook annotation names no section of docs/runbooks.md")
            for title in sorted(set(named)):
                if title not in RUNBOOK_SECTIONS:
                    errors.append(f"alerts.yml {name}: docs/runbooks.md has no section {title!r}")
            alerts.setdefault(name, set()).add(sev)
    return alerts


def check_tests(alerts, errors):
    tests = yaml.safe_load((DEPLOY / "prometheus/alerts_test.yml").read_text())
    fires, quiet = {}, set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            name = case["alertname"]
            exp = case.get("exp_alerts") or []
            if exp:
                for a in exp:
                    fires.setdefault(name, set()).add(a.get("exp_labels", {}).get("severity"))
                    if not a.get("exp_annotations"):
                        errors.append(f"alerts_test.yml: a firing case of {name} checks no annotations")
            else:
                quiet.add(name)
    for name, severities in sorted(alerts.items()):
        missing = severities - fires.get(name, set())
        if missing:
            errors.append(f"alerts_test.yml: {name} has no case where it fires with severity {sorted(missing)}")
        if name not in quiet:
            errors.append(f"alerts_test.yml: {name} has no case where it must stay quiet")
    for name in sorted(set(fires) | quiet):
        if name not in alerts:
            errors.append(f"alerts_test.yml: tests {name}, which alerts.yml does not define")


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def check_dashboard(errors):
    path = DEPLOY / "grafana/hydra-billing.json"
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        errors.append(f"{path.name}: not JSON: {e}")
        return 0
    where = path.name
    if not isinstance(dash.get("schemaVersion"), int) or not 36 <= dash["schemaVersion"] <= 41:
        errors.append(f"{where}: schemaVersion {dash.get('schemaVersion')!r}, expected about 39")
    if not dash.get("uid") or not dash.get("title"):
        errors.append(f"{where}: needs a uid and a title")
    if dash.get("id") is not None:
        errors.append(f"{where}: id must be null so that an import creates the dashboard")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append(f"{where}: needs a `datasource` variable of type datasource, query prometheus")
    ids, exprs, cells = set(), 0, {}
    for p in all_panels(dash.get("panels", [])):
        pw = f"{where} panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errors.append(f"{pw}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["x"] + g["w"] > 24:
            errors.append(f"{pw}: gridPos {g} is not within the 24 columns")
        else:
            for cx in range(g["x"], g["x"] + g["w"]):
                for cy in range(g["y"], g["y"] + g["h"]):
                    if (cx, cy) in cells:
                        errors.append(f"{pw}: overlaps panel {cells[(cx, cy)]}")
                        break
                    cells[(cx, cy)] = p.get("id")
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{pw}: its datasource is not ${{datasource}}")
        if not p.get("targets"):
            errors.append(f"{pw}: no query")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(f"{pw} {t.get('refId')}: its datasource is not ${{datasource}}")
            if not t.get("expr"):
                errors.append(f"{pw} {t.get('refId')}: no expr")
                continue
            exprs += 1
            check_expr(f"{pw} {t.get('refId')}", t["expr"], errors)
    return exprs


def self_test():
    """The linter must catch what it is for; a parser that found nothing would pass everything."""
    cases = {
        'sum by (job, le) (rate(hydra_http_request_duration_seconds_bucket{route="/x"}[$__rate_interval]))':
            ({"hydra_http_request_duration_seconds_bucket"}, set()),
        "time() - max without (instance) (hydra_job_last_success_timestamp_seconds) > clamp_min(3 * x_y, 600)":
            ({"hydra_job_last_success_timestamp_seconds", "x_y"}, set()),
        "hydra_stripe_events offset 5m unless on (job) hydra_typo":
            ({"hydra_stripe_events", "hydra_typo"}, set()),
        "histogram_quantlie(0.99, up)": ({"up"}, {"histogram_quantlie"}),
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            sys.exit(f"observability.py self-test: {expr!r} gave {got}, expected {want}")


def main():
    self_test()
    errors = []
    alerts = check_rules(errors)
    check_tests(alerts, errors)
    exprs = check_dashboard(errors)
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"ok: {len(alerts)} alerts each with firing and quiet tests; "
          f"{exprs} dashboard queries and every rule use only known metrics")


if __name__ == "__main__":
    main()
