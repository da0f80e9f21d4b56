"""The client's own logic (retries, Retry-After, timeouts, the unavailability policy) against a
scripted local stub: the real service cannot be made to fail on cue."""

from __future__ import annotations

import logging
import time
from typing import List

import pytest
from conftest import Answer, Stub, error

from hydra_billing import (
    BillingClient,
    BillingError,
    BillingUnavailable,
    FreeTierLimitReached,
    RateLimited,
)

ALLOWED = {
    "allowed": True,
    "reason": None,
    "plan_tier": "free",
    "access_until": None,
    "grace_ends_at": None,
    "required_tier": None,
    "upgrade_url": "http://billing.test/billing/upgrade",
}
RESERVED = {"reservation_id": "res_1", "expires_at": "2030-01-01T00:15:00Z", "tier": "free", "metric": "fix"}


def client(url: str, **kw: object) -> BillingClient:
    kw.setdefault("backoff", 0.01)
    return BillingClient(url, "stub-token-0123456789abcdef0123456789", **kw)  # type: ignore[arg-type]


def test_a_503_then_200_is_retried(stub: Stub) -> None:
    stub.script(error(503, "stripe_unavailable"), Answer(200, ALLOWED))
    answer = client(stub.url).access("t1", "workflows")
    assert answer.allowed is True
    assert [(r.method, r.path) for r in stub.requests] == [("GET", "/api/tenants/t1/access?feature=workflows")] * 2
    assert stub.requests[0].headers["Authorization"] == "Bearer stub-token-0123456789abcdef0123456789"


def test_a_429_waits_for_its_retry_after(stub: Stub) -> None:
    stub.script(error(429, "rate_limited", {"Retry-After": "1"}, retry_after=1), Answer(200, ALLOWED))
    started = time.monotonic()
    assert client(stub.url).access("t1", "workflows").allowed is True
    assert len(stub.requests) == 2
    assert stub.requests[1].at - stub.requests[0].at >= 1.0
    assert time.monotonic() - started >= 1.0


def test_a_retry_after_longer_than_the_cap_waits_only_the_cap(stub: Stub) -> None:
    stub.script(error(503, "database_unavailable", {"Retry-After": "60"}), Answer(200, ALLOWED))
    started = time.monotonic()
    assert client(stub.url, max_delay=0.2).access("t1", "workflows").allowed is True
    assert len(stub.requests) == 2
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    "answer, code",
    [
        (error(400, "invalid_request"), "invalid_request"),
        (error(401, "unauthorized"), "unauthorized"),
        (error(404, "not_found"), "not_found"),
        (error(409, "conflict", reservation_status="released"), "conflict"),
    ],
)
def test_a_4xx_other_than_429_is_not_retried(stub: Stub, answer: Answer, code: str) -> None:
    stub.script(answer, Answer(200, {"reservation_id": "res_1", "status": "committed"}))
    with pytest.raises(BillingError) as e:
        client(stub.url, retries=3).commit("res_1")
    assert e.value.code == code
    assert e.value.status == answer.status
    assert not isinstance(e.value, BillingUnavailable)
    assert len(stub.requests) == 1


def test_a_402_raises_free_tier_limit_reached_at_once(stub: Stub) -> None:
    stub.script(
        error(
            402,
            "free_tier_limit_reached",
            metric="fix",
            used=5,
            limit=5,
            resets_at="2030-01-31T00:00:00Z",
            upgrade_url="http://billing.test/billing/upgrade",
        )
    )
    with pytest.raises(FreeTierLimitReached) as e:
        client(stub.url).reserve("t1", "fix")
    assert (e.value.metric, e.value.used, e.value.limit) == ("fix", 5, 5)
    assert e.value.resets_at is not None and e.value.resets_at.year == 2030
    assert len(stub.requests) == 1


def test_5xx_every_time_raises_billing_unavailable_after_the_retries(stub: Stub) -> None:
    stub.script(*[error(503, "database_unavailable") for _ in range(3)])
    with pytest.raises(BillingUnavailable) as e:
        client(stub.url, retries=2).access("t1", "workflows")
    assert (e.value.code, e.value.status, e.value.attempts) == ("database_unavailable", 503, 3)
    assert len(stub.requests) == 3


def test_429_every_time_raises_rate_limited_after_the_retries(stub: Stub) -> None:
    stub.script(*[error(429, "rate_limited", {"Retry-After": "0"}, retry_after=0) for _ in range(2)])
    with pytest.raises(RateLimited) as e:
        client(stub.url, retries=1).access("t1", "workflows")
    assert e.value.retry_after == 0
    assert len(stub.requests) == 2


def test_a_proxy_page_instead_of_json_is_unavailable(stub: Stub) -> None:
    stub.script(*[Answer(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}) for _ in range(2)])
    with pytest.raises(BillingUnavailable) as e:
        client(stub.url, retries=1).access("t1", "workflows")
    assert (e.value.code, e.value.status) == ("http_502", 502)
    assert len(stub.requests) == 2


def test_a_server_that_does_not_answer_times_out(stub: Stub) -> None:
    stub.script(Answer(200, hang=True), Answer(200, ALLOWED))
    started = time.monotonic()
    answer = client(stub.url, timeout=0.3, retries=1).access("t1", "workflows")
    assert answer.allowed is True
    assert len(stub.requests) == 2
    assert time.monotonic() - started >= 0.3

    stub.script(Answer(200, hang=True))
    with pytest.raises(BillingUnavailable) as e:
        client(stub.url, timeout=0.3, retries=0).access("t1", "workflows")
    assert e.value.code == "timeout"


def test_reserve_sends_the_ttl_and_commit_is_retried_inside_a_metered_run(stub: Stub) -> None:
    stub.script(
        Answer(200, RESERVED),
        error(503, "database_unavailable", {"Retry-After": "0"}),
        Answer(200, {"reservation_id": "res_1", "status": "committed"}),
    )
    with client(stub.url).metered_run("t1", "fix", ttl_seconds=3600) as run:
        assert run.metered
    assert run.settlement is not None and run.settlement.status == "committed"
    assert [(r.method, r.path) for r in stub.requests] == [
        ("POST", "/api/tenants/t1/usage/fix/reserve"),
        ("POST", "/api/usage/reservations/res_1/commit"),
        ("POST", "/api/usage/reservations/res_1/commit"),
    ]
    assert stub.requests[0].body == b'{"ttl_seconds": 3600}'


def test_ids_are_encoded_into_one_path_segment(stub: Stub) -> None:
    stub.script(Answer(200, ALLOWED))
    client(stub.url).access("a/../b", "workflows", count=2)
    assert stub.requests[0].path == "/api/tenants/a%2F..%2Fb/access?feature=workflows&count=2"


def test_connection_refused_with_allow_runs_the_body_unmetered(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: List[bool] = []
    with caplog.at_level(logging.WARNING, logger="hydra_billing"):
        with client(refused_url, retries=2, on_unavailable="allow").metered_run("t1", "fix") as run:
            ran.append(True)
    assert ran == [True]
    assert run.metered is False and run.settlement is None
    assert any("unmetered" in r.getMessage() for r in caplog.records)


def test_connection_refused_with_deny_raises_and_the_body_never_runs(refused_url: str) -> None:
    ran: List[bool] = []
    with pytest.raises(BillingUnavailable) as e:
        with client(refused_url, retries=2, on_unavailable="deny").metered_run("t1", "fix"):
            ran.append(True)
    assert ran == []
    assert (e.value.code, e.value.status, e.value.attempts) == ("connection_failed", None, 3)


def test_the_policy_can_be_overridden_per_call(refused_url: str) -> None:
    strict = client(refused_url, retries=0, on_unavailable="deny")
    ran: List[bool] = []
    with strict.metered_run("t1", "fix", on_unavailable="allow"):
        ran.append(True)
    assert ran == [True]
    assert strict.require("t1", "jira", on_unavailable="allow") is None
    with pytest.raises(BillingUnavailable):
        strict.require("t1", "jira")
    lenient = client(refused_url, retries=0)
    with pytest.raises(BillingUnavailable):
        with lenient.metered_run("t1", "fix", on_unavailable="deny"):
            ran.append(True)
    assert ran == [True]


def test_the_plain_calls_always_raise_when_unavailable(refused_url: str) -> None:
    with pytest.raises(BillingUnavailable):
        client(refused_url, retries=0, on_unavailable="allow").reserve("t1", "fix")


def test_a_failed_release_never_hides_the_runs_exception(stub: Stub) -> None:
    stub.script(Answer(200, RESERVED), *[error(503, "database_unavailable") for _ in range(2)])

    class RunFailed(Exception):
        pass

    with pytest.raises(RunFailed):
        with client(stub.url, retries=1).metered_run("t1", "fix"):
            raise RunFailed()
    assert [r.path for r in stub.requests][1:] == ["/api/usage/reservations/res_1/release"] * 2


def test_bad_arguments_are_refused_up_front() -> None:
    with pytest.raises(ValueError):
        BillingClient("billing.internal", "t")
    with pytest.raises(ValueError):
        BillingClient("http://billing.internal", "t", on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):

        @client("http://billing.internal").requires_feature("jira", tenant="tenant")
        def f(tenant_id: str) -> None:
            pass
