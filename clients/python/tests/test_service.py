"""The client against the real billing service (see conftest.py for which one)."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import List

import pytest
from conftest import Server

from hydra_billing import (
    AccessDenied,
    BillingClient,
    BillingError,
    BillingUnavailable,
    FeatureNotInPlan,
    FreeTierLimitReached,
    Reservation,
    SubscriptionRequired,
)

FREE_FIXES = 5  # the free tier's fixes per 30 days, as the service's README states


def use_up_fixes(billing: BillingClient, tenant_id: str, n: int) -> None:
    for _ in range(n):
        with billing.metered_run(tenant_id, "fix", on_unavailable="deny") as run:
            assert run.metered


def test_announce_creates_the_tenant_then_updates_it(billing: BillingClient, tenant_id: str) -> None:
    created = billing.announce_tenant(tenant_id, "Acme Robotics")
    assert created.created is True
    assert (created.id, created.name, created.billing_email, created.plan_tier) == (
        tenant_id,
        "Acme Robotics",
        None,
        "free",
    )

    updated = billing.announce_tenant(tenant_id, "Acme Robotics GmbH", billing_email="ap@acme.test")
    assert updated.created is False
    assert (updated.id, updated.name, updated.billing_email, updated.plan_tier) == (
        tenant_id,
        "Acme Robotics GmbH",
        "ap@acme.test",
        "free",
    )

    # A PUT replaces: announcing without an email clears the stored one.
    again = billing.announce_tenant(tenant_id, "Acme Robotics GmbH")
    assert (again.created, again.billing_email) == (False, None)


def test_announce_with_a_bad_email_is_an_invalid_request(billing: BillingClient, tenant_id: str) -> None:
    with pytest.raises(BillingError) as e:
        billing.announce_tenant(tenant_id, "Acme", billing_email="not an email")
    assert (e.value.code, e.value.status) == ("invalid_request", 400)


def test_reserve_then_commit(billing: BillingClient, tenant_id: str) -> None:
    before = datetime.now(timezone.utc)
    r = billing.reserve(tenant_id, "fix")
    assert isinstance(r, Reservation)
    assert r.reservation_id
    assert (r.metric, r.tier) == ("fix", "free")
    # The service's default hold is 15 minutes (a second's slack for clocks and rounding).
    assert before + timedelta(minutes=15) - timedelta(seconds=2) <= r.expires_at
    assert r.expires_at <= datetime.now(timezone.utc) + timedelta(minutes=15, seconds=2)

    settled = billing.commit(r)
    assert (settled.reservation_id, settled.status) == (r.reservation_id, "committed")


def test_reserve_with_a_ttl_holds_the_unit_that_long(billing: BillingClient, tenant_id: str) -> None:
    before = datetime.now(timezone.utc)
    r = billing.reserve(tenant_id, "doc_run", ttl_seconds=120)
    assert before + timedelta(seconds=118) <= r.expires_at <= datetime.now(timezone.utc) + timedelta(seconds=122)
    with pytest.raises(BillingError) as e:
        billing.reserve(tenant_id, "fix", ttl_seconds=10)
    assert (e.value.code, e.value.status) == ("invalid_request", 400)


def test_release_gives_the_reservation_back_and_it_can_no_longer_be_committed(
    billing: BillingClient, tenant_id: str
) -> None:
    r = billing.reserve(tenant_id, "linear_cycle")
    released = billing.release(r.reservation_id)
    assert (released.reservation_id, released.status) == (r.reservation_id, "released")
    # Repeating the release answers the same.
    assert billing.release(r.reservation_id).status == "released"
    with pytest.raises(BillingError) as e:
        billing.commit(r.reservation_id)
    assert (e.value.code, e.value.status) == ("conflict", 409)
    assert e.value.details.get("reservation_status") == "released"


def test_commit_of_an_unknown_reservation_is_not_found(billing: BillingClient) -> None:
    with pytest.raises(BillingError) as e:
        billing.commit("res_doesnotexist")
    assert (e.value.code, e.value.status) == ("not_found", 404)


def test_free_tier_hard_stop_at_five_fixes(billing: BillingClient, tenant_id: str) -> None:
    use_up_fixes(billing, tenant_id, FREE_FIXES)

    ran: List[bool] = []
    with pytest.raises(FreeTierLimitReached) as e:
        with billing.metered_run(tenant_id, "fix"):
            ran.append(True)
    assert ran == [], "the body of a refused run never runs"
    err = e.value
    assert (err.code, err.status) == ("free_tier_limit_reached", 402)
    assert (err.metric, err.used, err.limit) == ("fix", 5, 5)
    assert err.upgrade_url and err.upgrade_url.startswith("http") and err.upgrade_url.endswith("/billing/upgrade")
    assert err.resets_at is not None and err.resets_at > datetime.now(timezone.utc)
    # Other metrics have their own quota.
    with billing.metered_run(tenant_id, "doc_run") as run:
        assert run.metered


def test_metered_run_releases_on_exception_so_the_unit_is_given_back(
    billing: BillingClient, tenant_id: str
) -> None:
    use_up_fixes(billing, tenant_id, FREE_FIXES - 1)

    class RunFailed(Exception):
        pass

    with pytest.raises(RunFailed):
        with billing.metered_run(tenant_id, "fix") as failed:
            raise RunFailed()
    assert failed.settlement is not None and failed.settlement.status == "released"

    # The released unit is free again: a fifth run fits, and only then is the quota used up.
    with billing.metered_run(tenant_id, "fix") as fifth:
        pass
    assert fifth.settlement is not None and fifth.settlement.status == "committed"
    with pytest.raises(FreeTierLimitReached):
        billing.reserve(tenant_id, "fix")


def test_a_repeated_commit_answers_the_same_and_counts_once(billing: BillingClient, tenant_id: str) -> None:
    r = billing.reserve(tenant_id, "fix")
    first = billing.commit(r)
    again = billing.commit(r)
    assert first == again
    assert again.status == "committed"
    # Counted once: four more fixes fit, the sixth does not.
    use_up_fixes(billing, tenant_id, FREE_FIXES - 1)
    with pytest.raises(FreeTierLimitReached) as e:
        billing.reserve(tenant_id, "fix")
    assert e.value.used == FREE_FIXES


def test_workflows_are_allowed_on_free(billing: BillingClient, tenant_id: str) -> None:
    billing.announce_tenant(tenant_id, "Free Co")
    answer = billing.access(tenant_id, "workflows")
    assert answer.allowed is True
    assert answer.reason is None
    assert answer.plan_tier == "free"
    assert billing.require(tenant_id, "workflows") == answer


def test_jira_is_refused_on_free_with_feature_not_in_plan(billing: BillingClient, tenant_id: str) -> None:
    answer = billing.access(tenant_id, "jira")
    assert (answer.allowed, answer.reason, answer.required_tier, answer.plan_tier) == (
        False,
        "feature_not_in_plan",
        "business",
        "free",
    )
    with pytest.raises(FeatureNotInPlan) as e:
        billing.require(tenant_id, "jira")
    err = e.value
    assert (err.code, err.feature, err.reason, err.required_tier) == (
        "feature_not_in_plan",
        "jira",
        "feature_not_in_plan",
        "business",
    )
    assert err.upgrade_url and err.upgrade_url.endswith("/billing/upgrade")


def test_requires_feature_decorator_asks_before_the_function_runs(billing: BillingClient, tenant_id: str) -> None:
    calls: List[str] = []

    @billing.requires_feature("jira", tenant="tenant_id")
    def connect_jira(site: str, tenant_id: str) -> str:
        calls.append(site)
        return "connected"

    @billing.requires_feature("workflows", tenant=lambda *a, **kw: kw["tenant_id"])
    def run_workflow(name: str, *, tenant_id: str) -> str:
        calls.append(name)
        return "ran"

    with pytest.raises(FeatureNotInPlan):
        connect_jira("acme.atlassian.net", tenant_id)  # the tenant passed by position
    with pytest.raises(AccessDenied):
        connect_jira(site="acme.atlassian.net", tenant_id=tenant_id)  # and by keyword
    assert calls == []
    assert run_workflow("fix", tenant_id=tenant_id) == "ran"
    assert calls == ["fix"]
    assert connect_jira.__name__ == "connect_jira"


def test_connected_repos_takes_a_count(billing: BillingClient, tenant_id: str) -> None:
    assert billing.access(tenant_id, "connected_repos", count=3).allowed is True
    with pytest.raises(BillingError) as e:
        billing.access(tenant_id, "connected_repos")
    assert e.value.code == "invalid_request"


def test_a_lapsed_plan_raises_subscription_required(server: Server, billing: BillingClient, tenant_id: str) -> None:
    if server.admin_token is None:
        pytest.skip("needs HYDRA_ADMIN_TOKEN to give the tenant a plan that has ended")
    billing.announce_tenant(tenant_id, "Lapsed Co")
    # An Enterprise contract that ended: the tenant is free again, and Jira (which the ended plan
    # had) is refused because the plan lapsed, not because free lacks it.
    request = urllib.request.Request(
        f"{server.url}/api/admin/tenants/{tenant_id}/plan",
        data=json.dumps(
            {"plan_tier": "enterprise", "reason": "pytest", "contract_ends_at": "2020-01-01T00:00:00Z"}
        ).encode(),
        headers={
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
            "X-Hydra-Actor": "pytest",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as r:
        assert r.status == 200
    answer = billing.access(tenant_id, "jira")
    assert (answer.allowed, answer.reason, answer.plan_tier) == (False, "manual_plan_ended", "free")
    with pytest.raises(SubscriptionRequired) as e:
        billing.require(tenant_id, "jira")
    assert (e.value.code, e.value.reason, e.value.feature) == ("subscription_required", "manual_plan_ended", "jira")
    assert e.value.upgrade_url and e.value.upgrade_url.endswith("/billing/upgrade")


def test_an_unknown_metric_is_an_invalid_request(billing: BillingClient, tenant_id: str) -> None:
    with pytest.raises(BillingError) as e:
        billing.reserve(tenant_id, "deploy")
    err = e.value
    assert (err.code, err.status) == ("invalid_request", 400)
    assert not isinstance(err, BillingUnavailable)
    assert "fix" in err.message


def test_an_unknown_feature_is_an_invalid_request(billing: BillingClient, tenant_id: str) -> None:
    with pytest.raises(BillingError) as e:
        billing.access(tenant_id, "teleportation")
    assert (e.value.code, e.value.status) == ("invalid_request", 400)


def test_a_bad_token_is_unauthorized_and_never_fails_open(server: Server, tenant_id: str) -> None:
    bad = BillingClient(server.url, "not-the-service-token-0123456789abcdef", retries=3, backoff=0.01)
    with pytest.raises(BillingError) as e:
        bad.access(tenant_id, "workflows")
    assert (e.value.code, e.value.status) == ("unauthorized", 401)
    # A refusal is not an outage: the "allow" policy does not run the body.
    ran: List[bool] = []
    with pytest.raises(BillingError) as e:
        with bad.metered_run(tenant_id, "fix", on_unavailable="allow"):
            ran.append(True)
    assert e.value.code == "unauthorized"
    assert ran == []
