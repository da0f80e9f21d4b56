"""The client of Hydra's billing service, for Hydra's own services (the service token's calls)."""

from __future__ import annotations

import email.utils
import functools
import http.client
import inspect
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Callable, Dict, Literal, Mapping, Optional, Tuple, Type, TypeVar, Union, cast

from .errors import (
    AccessDenied,
    BillingError,
    BillingUnavailable,
    FeatureNotInPlan,
    FreeTierLimitReached,
    RateLimited,
    SubscriptionRequired,
)
from .models import Access, Reservation, Settlement, Tenant

__all__ = ["BillingClient", "MeteredRun", "UnavailablePolicy", "__version__"]

__version__ = "0.1.0"

log = logging.getLogger("hydra_billing")

#: What to do when the service cannot be reached (or answers 5xx) after every retry:
#: ``"allow"`` runs the work unmetered and logs a warning, ``"deny"`` raises BillingUnavailable.
UnavailablePolicy = Literal["allow", "deny"]
_POLICIES = ("allow", "deny")

#: The access answer's refusals that are about the plan itself; any other reason of a refusal is
#: a lapse (the plan that had the feature ended: ``canceled``, ``past_due_grace_ended``, ...).
_PLAN_REFUSALS = frozenset({"feature_not_in_plan", "repo_limit_reached", "seat_limit_reached"})

_BY_CODE: Dict[str, Type[BillingError]] = {
    "free_tier_limit_reached": FreeTierLimitReached,
    "subscription_required": SubscriptionRequired,
    "feature_not_in_plan": FeatureNotInPlan,
}

F = TypeVar("F", bound=Callable[..., Any])
TenantSelector = Union[str, Callable[..., str]]
CountSelector = Union[None, int, str, Callable[..., Optional[int]]]


def _segment(value: str) -> str:
    """One path segment, percent-encoded: ids never change the path they are put in."""
    return urllib.parse.quote(str(value), safe="")


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: delta-seconds, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_from_answer(status: int, raw: bytes, retry_after: Optional[float]) -> BillingError:
    """The exception for a non-2xx answer, from the service's error shape when the body has it."""
    code: Optional[str] = None
    message = ""
    details: Dict[str, Any] = {}
    try:
        error = json.loads(raw.decode("utf-8"))["error"]
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = error["code"]
            message = str(error.get("message", ""))
            details = {k: v for k, v in error.items() if k not in ("code", "message")}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        pass
    if code is None:
        # Not the service's shape (a proxy's page, a load balancer's 502): keep a little of it.
        code = f"http_{status}"
        message = raw[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
    if status == 429:
        if retry_after is not None and "retry_after" not in details:
            details["retry_after"] = retry_after
        return RateLimited(code, message, status, details)
    if status >= 500:
        return BillingUnavailable(code, message, status, details)
    return _BY_CODE.get(code, BillingError)(code, message, status, details)


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return isinstance(exc, (socket.timeout, TimeoutError))


class BillingClient:
    """Calls the billing service with Hydra's service token.

    Every call has a ``timeout`` (seconds, per connection attempt and per read) and is retried up
    to ``retries`` times (so ``retries + 1`` requests at most) on connection failures, timeouts,
    5xx and 429, waiting ``backoff * 2**n`` seconds with jitter between attempts, or what the
    answer's ``Retry-After`` says; no wait is longer than ``max_delay``. Other 4xx are never
    retried: they raise :class:`BillingError` at once.

    ``on_unavailable`` is the default policy of :meth:`metered_run`, :meth:`require` and
    :meth:`requires_feature` when the service stays unreachable: ``"allow"`` (fail open: run the
    work, log a warning) or ``"deny"`` (raise :class:`BillingUnavailable`). The plain calls
    (:meth:`reserve`, :meth:`access`, ...) always raise.

    The client holds no connection or mutable state: one instance can be shared across threads.
    """

    def __init__(
        self,
        base_url: str,
        service_token: str,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_delay: float = 5.0,
        on_unavailable: UnavailablePolicy = "allow",
        user_agent: Optional[str] = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        if not service_token:
            raise ValueError("service_token is required")
        if timeout <= 0:
            raise ValueError("timeout must be above 0 seconds")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if backoff < 0 or max_delay < 0:
            raise ValueError("backoff and max_delay must be 0 or more")
        self._policy = self._check_policy(on_unavailable)
        self._base = base_url.rstrip("/")
        self._token = service_token
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_delay = float(max_delay)
        self._user_agent = user_agent or f"hydra-billing-client/{__version__} (python urllib)"
        self._opener = urllib.request.build_opener()

    def __repr__(self) -> str:  # never the token
        return f"BillingClient({self._base!r}, timeout={self.timeout}, retries={self.retries}, on_unavailable={self._policy!r})"

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def on_unavailable(self) -> UnavailablePolicy:
        return self._policy

    # ----------------------------------------------------------------------------------------
    # The service's calls

    def announce_tenant(self, tenant_id: str, name: str, billing_email: Optional[str] = None) -> Tenant:
        """``PUT /api/tenants/{id}``: creates the tenant (``created=True``, on Free) or replaces its
        name and billing email: ``billing_email=None`` clears a stored one. Safe to repeat."""
        body: Dict[str, Any] = {"name": name}
        if billing_email is not None:
            body["billing_email"] = billing_email
        status, answer = self._call("PUT", f"/api/tenants/{_segment(tenant_id)}", body=body)
        return Tenant.from_json(answer, created=status == 201)

    def reserve(self, tenant_id: str, metric: str, ttl_seconds: Optional[int] = None) -> Reservation:
        """``POST /api/tenants/{id}/usage/{metric}/reserve``: holds one unit of ``metric``
        (``fix``, ``doc_run``, ``linear_cycle``) until it is committed, released or expires
        (after ``ttl_seconds``, 60 to 86400; the service's default is 15 minutes).

        Raises :class:`FreeTierLimitReached` when a free tenant has used its units.

        Retrying a reserve is not idempotent: when an answer is lost (a timeout after the request
        reached the service) the retry makes a second reservation, and the first stays open,
        holding one unit, until it expires by itself.
        """
        body = None if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        _, answer = self._call(
            "POST", f"/api/tenants/{_segment(tenant_id)}/usage/{_segment(metric)}/reserve", body=body
        )
        return Reservation.from_json(answer)

    def commit(self, reservation_id: Union[str, Reservation]) -> Settlement:
        """``POST /api/usage/reservations/{id}/commit``: the run counts, exactly once. Repeating a
        commit answers ``committed`` again (so retries are safe); committing a released or
        expired reservation raises :class:`BillingError` ``conflict`` (``details`` has
        ``reservation_status``)."""
        return self._settle(reservation_id, "commit")

    def release(self, reservation_id: Union[str, Reservation]) -> Settlement:
        """``POST /api/usage/reservations/{id}/release``: the run does not count and its unit is
        given back. Repeating answers ``released`` again; releasing an expired reservation is a
        no-op answering ``expired``; releasing a committed one raises ``conflict``."""
        return self._settle(reservation_id, "release")

    def access(self, tenant_id: str, feature: str, count: Optional[int] = None) -> Access:
        """``GET /api/tenants/{id}/access?feature=F[&count=N]``: whether the tenant may use
        ``feature`` (``count`` is required by ``connected_repos`` and ``seats``). A refusal is an
        answer (``allowed=False``), not an exception; see :meth:`require` for that."""
        query: Dict[str, str] = {"feature": feature}
        if count is not None:
            query["count"] = str(count)
        _, answer = self._call("GET", f"/api/tenants/{_segment(tenant_id)}/access", query=query)
        return Access.from_json(answer)

    # ----------------------------------------------------------------------------------------
    # Helpers on top of them

    def metered_run(
        self,
        tenant_id: str,
        metric: str,
        *,
        ttl_seconds: Optional[int] = None,
        on_unavailable: Optional[UnavailablePolicy] = None,
    ) -> "MeteredRun":
        """A context manager metering one run::

            with billing.metered_run(tenant_id, "fix") as run:
                do_the_fix()

        Reserves on enter (raising :class:`FreeTierLimitReached` when the free tier is used up, so
        the body never runs), commits when the body returns, releases when it raises (and lets
        the exception through). When the service is unavailable, ``on_unavailable`` (default: the
        client's) decides: ``"allow"`` runs the body unmetered (``run.metered`` is False) and logs
        a warning, ``"deny"`` raises :class:`BillingUnavailable`.
        """
        policy = self._policy if on_unavailable is None else self._check_policy(on_unavailable)
        return MeteredRun(self, tenant_id, metric, ttl_seconds, policy)

    def require(
        self,
        tenant_id: str,
        feature: str,
        count: Optional[int] = None,
        *,
        on_unavailable: Optional[UnavailablePolicy] = None,
    ) -> Optional[Access]:
        """Asks :meth:`access` and raises when the answer is a refusal: :class:`SubscriptionRequired`
        when the tenant's plan lapsed (the answer's ``reason`` is a lapse: ``canceled``,
        ``past_due_grace_ended``, ...), else :class:`FeatureNotInPlan` (``feature_not_in_plan``,
        ``repo_limit_reached``, ``seat_limit_reached``). Both are :class:`AccessDenied`.

        Returns the answer when allowed, or ``None`` when the service was unavailable and the
        policy (``"allow"``) let the call through.
        """
        policy = self._policy if on_unavailable is None else self._check_policy(on_unavailable)
        try:
            answer = self.access(tenant_id, feature, count)
        except BillingUnavailable as e:
            if policy == "deny":
                raise
            log.warning(
                "billing service unavailable (%s); allowing feature %s for tenant %s unchecked",
                e,
                feature,
                tenant_id,
            )
            return None
        if answer.allowed:
            return answer
        raise self._refusal(tenant_id, feature, answer)

    def requires_feature(
        self,
        feature: str,
        *,
        tenant: TenantSelector,
        count: CountSelector = None,
        on_unavailable: Optional[UnavailablePolicy] = None,
    ) -> Callable[[F], F]:
        """A decorator calling :meth:`require` before the function runs::

            @billing.requires_feature("jira", tenant="tenant_id")
            def connect_jira(tenant_id: str, site: str) -> None: ...

            @billing.requires_feature("connected_repos", tenant=lambda req: req.tenant,
                                      count=lambda req: len(req.repos))
            def connect_repos(req): ...

        ``tenant`` names the decorated function's parameter holding the tenant id (passed by
        position or keyword), or is a callable given the call's ``(*args, **kwargs)``. ``count``
        is likewise a parameter name or a callable, or a fixed ``int``. Synchronous functions only.
        """
        policy = self._policy if on_unavailable is None else self._check_policy(on_unavailable)

        def decorate(fn: F) -> F:
            pick_tenant = _selector(fn, tenant, "tenant")
            pick_count: Callable[[Tuple[Any, ...], Dict[str, Any]], Optional[int]]
            if count is None or isinstance(count, int):
                fixed = count
                pick_count = lambda args, kwargs: fixed  # noqa: E731
            else:
                pick_count = _selector(fn, count, "count")

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self.require(
                    pick_tenant(args, kwargs), feature, pick_count(args, kwargs), on_unavailable=policy
                )
                return fn(*args, **kwargs)

            return cast(F, wrapper)

        return decorate

    # ----------------------------------------------------------------------------------------
    # Internals

    @staticmethod
    def _check_policy(policy: str) -> UnavailablePolicy:
        if policy not in _POLICIES:
            raise ValueError(f"on_unavailable is 'allow' or 'deny', not {policy!r}")
        return cast(UnavailablePolicy, policy)

    @staticmethod
    def _refusal(tenant_id: str, feature: str, answer: Access) -> AccessDenied:
        details: Dict[str, Any] = {
            "feature": feature,
            "reason": answer.reason,
            "required_tier": answer.required_tier,
            "upgrade_url": answer.upgrade_url,
            "plan_tier": answer.plan_tier,
        }
        if answer.reason is None or answer.reason in _PLAN_REFUSALS:
            message = f"{feature} is not in the plan of tenant {tenant_id} ({answer.reason or 'refused'})"
            if answer.required_tier:
                message += f"; it comes with {answer.required_tier}"
            return FeatureNotInPlan("feature_not_in_plan", message, 402, details)
        return SubscriptionRequired(
            "subscription_required",
            f"{feature} needs tenant {tenant_id}'s paid plan again ({answer.reason})",
            402,
            details,
        )

    def _settle(self, reservation_id: Union[str, Reservation], how: str) -> Settlement:
        rid = reservation_id.reservation_id if isinstance(reservation_id, Reservation) else reservation_id
        _, answer = self._call("POST", f"/api/usage/reservations/{_segment(rid)}/{how}")
        return Settlement.from_json(answer)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, str]] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[int, Dict[str, Any]]:
        """One call with its retries: the status and JSON object of a 2xx answer, else raises."""
        url = self._base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempts = 0
        while True:
            attempts += 1
            retry_after: Optional[float] = None
            failure: BillingUnavailable
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    status = response.status
                    raw = response.read()
                return status, self._decode(status, raw, attempts)
            except urllib.error.HTTPError as e:
                retry_after = _retry_after_seconds(e.headers.get("Retry-After") if e.headers else None)
                try:
                    raw = e.read()
                except (OSError, http.client.HTTPException):
                    raw = b""
                finally:
                    e.close()
                refused = _error_from_answer(e.code, raw, retry_after)
                if not isinstance(refused, BillingUnavailable):
                    raise refused from None
                failure = refused
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if _is_timeout(e):
                    failure = BillingUnavailable("timeout", f"no answer within {self.timeout:g}s: {method} {path}")
                else:
                    reason = e.reason if isinstance(e, urllib.error.URLError) else e
                    failure = BillingUnavailable("connection_failed", f"{method} {path}: {reason}")
            failure.attempts = attempts
            if attempts > self.retries:
                raise failure
            delay = self._delay(attempts, retry_after)
            log.debug("%s %s failed (%s); retry %d in %.2fs", method, path, failure, attempts, delay)
            time.sleep(delay)

    def _delay(self, retry: int, retry_after: Optional[float]) -> float:
        """The wait before retry number ``retry`` (1-based): the answer's ``Retry-After`` plus a
        little jitter, else exponential backoff with jitter ("equal jitter": half fixed, half
        random, so callers failing together spread out); at most ``max_delay``."""
        if retry_after is not None:
            wait = retry_after + random.uniform(0, self.backoff)
        else:
            step = self.backoff * (2 ** (retry - 1))
            wait = step / 2 + random.uniform(0, step / 2)
        return min(wait, self.max_delay)

    @staticmethod
    def _decode(status: int, raw: bytes, attempts: int) -> Dict[str, Any]:
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise BillingUnavailable(
                "invalid_response", f"a {status} answer without a JSON object", status, attempts=attempts
            )
        return answer


def _selector(
    fn: Callable[..., Any], selector: Union[str, Callable[..., Any]], what: str
) -> Callable[[Tuple[Any, ...], Dict[str, Any]], Any]:
    """Picks a value out of a call's arguments: by parameter name, or with a callable."""
    if callable(selector):
        pick = selector
        return lambda args, kwargs: pick(*args, **kwargs)
    if not isinstance(selector, str):
        raise TypeError(f"{what} is a parameter name or a callable, not {selector!r}")
    signature = inspect.signature(fn)
    if selector not in signature.parameters:
        raise TypeError(f"{fn.__qualname__} has no parameter {selector!r} (named by {what}=)")
    name = selector

    def by_name(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments[name]

    return by_name


class MeteredRun:
    """One metered run (see :meth:`BillingClient.metered_run`). After entering, ``reservation``
    is the held unit, or ``None`` when the run goes unmetered; after leaving, ``settlement`` is
    the commit's or release's answer when there was one."""

    def __init__(
        self,
        client: BillingClient,
        tenant_id: str,
        metric: str,
        ttl_seconds: Optional[int],
        policy: UnavailablePolicy,
    ) -> None:
        self.client = client
        self.tenant_id = tenant_id
        self.metric = metric
        self.ttl_seconds = ttl_seconds
        self.policy = policy
        self.reservation: Optional[Reservation] = None
        self.settlement: Optional[Settlement] = None
        self._entered = False

    @property
    def metered(self) -> bool:
        """Whether a unit was reserved (False when the service was unavailable and allowed it)."""
        return self.reservation is not None

    def __enter__(self) -> "MeteredRun":
        if self._entered:
            raise RuntimeError("a MeteredRun is entered once; call metered_run() for each run")
        self._entered = True
        try:
            self.reservation = self.client.reserve(self.tenant_id, self.metric, self.ttl_seconds)
        except BillingUnavailable as e:
            if self.policy == "deny":
                raise
            log.warning(
                "billing service unavailable (%s); running %s for tenant %s unmetered",
                e,
                self.metric,
                self.tenant_id,
            )
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # Returns None: the body's exception, if any, always propagates.
        reservation = self.reservation
        if reservation is None:
            return
        if exc_type is None:
            self._commit(reservation)
        else:
            self._release(reservation)

    def _commit(self, reservation: Reservation) -> None:
        try:
            self.settlement = self.client.commit(reservation)
        except BillingUnavailable as e:
            if self.policy == "deny":
                raise
            log.warning(
                "billing service unavailable (%s); run %s of tenant %s not committed: "
                "it goes uncounted and its reservation expires at %s",
                e,
                reservation.reservation_id,
                self.tenant_id,
                reservation.expires_at.isoformat(),
            )
        except BillingError as e:
            if e.code != "conflict":
                raise
            # The work is done; only its metering failed (typically the run outlived its
            # reservation: pass ttl_seconds for long runs). Raising would report a failed run.
            log.warning(
                "run %s of tenant %s could not be committed (%s); it goes uncounted",
                reservation.reservation_id,
                self.tenant_id,
                e,
            )

    def _release(self, reservation: Reservation) -> None:
        # The body's exception is what the caller must see; a failed release only logs (the
        # reservation expires by itself and gives its unit back then).
        try:
            self.settlement = self.client.release(reservation)
        except BillingError as e:
            log.warning(
                "run %s of tenant %s failed and could not be released (%s); its unit is held until %s",
                reservation.reservation_id,
                self.tenant_id,
                e,
                reservation.expires_at.isoformat(),
            )
