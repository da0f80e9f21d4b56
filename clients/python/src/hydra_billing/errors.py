"""The exceptions the client raises.

Every answer the service refuses comes as ``{"error": {"code", "message", ...details}}``; the
client raises :class:`BillingError` (or the subclass named after the code) carrying exactly that.
Failures to get an answer at all (connection refused, timeouts, 5xx, 429) are retried first and
raise :class:`BillingUnavailable` once the retries are spent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, Mapping, Optional

from .models import parse_time

__all__ = [
    "BillingError",
    "FreeTierLimitReached",
    "AccessDenied",
    "SubscriptionRequired",
    "FeatureNotInPlan",
    "BillingUnavailable",
    "RateLimited",
]


class BillingError(Exception):
    """An answer of the billing service that is not a success.

    ``code`` is the service's error code (``invalid_request``, ``unauthorized``, ``not_found``,
    ``conflict``, ...), ``status`` the HTTP status (``None`` when no answer came), ``details``
    every other field of the error object (``reservation_status`` for a conflict, ...).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{code} ({status}): {message}")
        self.code: str = code
        self.message: str = message
        self.status: Optional[int] = status
        self.details: Dict[str, Any] = dict(details or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class FreeTierLimitReached(BillingError):
    """402 ``free_tier_limit_reached``: the tenant used its free units of ``metric`` this window."""

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, message, status, details)
        d = self.details
        self.metric: Optional[str] = d.get("metric")
        self.used: Optional[int] = d.get("used")
        self.limit: Optional[int] = d.get("limit")
        self.resets_at: Optional[datetime] = parse_time(d.get("resets_at"))
        self.upgrade_url: Optional[str] = d.get("upgrade_url")


class AccessDenied(BillingError):
    """A feature is refused; catch this to handle both of its subclasses."""

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, message, status, details)
        d = self.details
        self.feature: Optional[str] = d.get("feature")
        #: Why: a lapse reason (``canceled``, ``past_due_grace_ended``, ...) or
        #: ``feature_not_in_plan``, ``repo_limit_reached``, ``seat_limit_reached``.
        self.reason: Optional[str] = d.get("reason")
        self.required_tier: Optional[str] = d.get("required_tier")
        self.upgrade_url: Optional[str] = d.get("upgrade_url")


class SubscriptionRequired(AccessDenied):
    """``subscription_required``: the tenant's paid plan lapsed (``reason`` says how)."""


class FeatureNotInPlan(AccessDenied):
    """``feature_not_in_plan``: the tenant's plan does not include the feature (or its count)."""


class BillingUnavailable(BillingError):
    """No usable answer after every retry: connection failures, timeouts, 5xx (and 429).

    ``code`` is the service's code when it answered (``database_unavailable``,
    ``stripe_unavailable``, ``internal_error``, ...), else ``connection_failed``, ``timeout`` or
    ``http_<status>`` for a body that is not the service's error shape. ``attempts`` is how many
    requests were made.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(code, message, status, details)
        self.attempts: int = attempts


class RateLimited(BillingUnavailable):
    """429 ``rate_limited`` still answered after every retry; ``retry_after`` in seconds."""

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(code, message, status, details, attempts)
        retry_after = self.details.get("retry_after")
        self.retry_after: Optional[float] = float(retry_after) if isinstance(retry_after, (int, float)) else None
