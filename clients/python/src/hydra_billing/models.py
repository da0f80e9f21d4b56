"""The typed answers of the service's calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

__all__ = ["Tenant", "Reservation", "Settlement", "Access", "parse_time"]


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 time as the service writes it (``2026-01-01T00:00:00Z``), timezone-aware."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _required_time(body: Mapping[str, Any], key: str) -> datetime:
    parsed = parse_time(body.get(key))
    if parsed is None:
        raise ValueError(f"{key} is not an RFC 3339 time: {body.get(key)!r}")
    return parsed


@dataclass(frozen=True)
class Tenant:
    """A tenant as the service keeps it, after ``announce_tenant``."""

    id: str
    name: str
    billing_email: Optional[str]
    plan_tier: str
    #: True when this call created the tenant (201), False when it updated it (200).
    created: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any], created: bool) -> "Tenant":
        return cls(
            id=str(body["id"]),
            name=str(body["name"]),
            billing_email=body.get("billing_email"),
            plan_tier=str(body["plan_tier"]),
            created=created,
        )


@dataclass(frozen=True)
class Reservation:
    """One reserved unit of a metric: commit it when the run is done, release it if it failed."""

    reservation_id: str
    #: When the unit stops being held if never settled (the service frees it by itself).
    expires_at: datetime
    #: The effective tier the run is metered under (``free`` ones count against the quota).
    tier: Optional[str]
    metric: Optional[str]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Reservation":
        return cls(
            reservation_id=str(body["reservation_id"]),
            expires_at=_required_time(body, "expires_at"),
            tier=body.get("tier"),
            metric=body.get("metric"),
        )


@dataclass(frozen=True)
class Settlement:
    """The answer of a commit or release: the reservation's status after it.

    ``committed`` or ``released``; a release of a reservation that had already expired answers
    ``expired`` (a no-op: the unit was already given back).
    """

    reservation_id: str
    status: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Settlement":
        return cls(reservation_id=str(body["reservation_id"]), status=str(body["status"]))


@dataclass(frozen=True)
class Access:
    """The service's answer to "may this tenant use this feature?"."""

    allowed: bool
    #: Why not, when not: a lapse reason (``past_due_grace_ended``, ``canceled``, ...) or
    #: ``feature_not_in_plan``, ``repo_limit_reached``, ``seat_limit_reached``.
    reason: Optional[str]
    plan_tier: str
    access_until: Optional[datetime]
    grace_ends_at: Optional[datetime]
    #: The tier that would have the feature, when refused for the plan.
    required_tier: Optional[str]
    upgrade_url: Optional[str]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Access":
        allowed = body["allowed"]
        if not isinstance(allowed, bool):
            raise ValueError(f"allowed is not a boolean: {allowed!r}")
        return cls(
            allowed=allowed,
            reason=body.get("reason"),
            plan_tier=str(body["plan_tier"]),
            access_until=parse_time(body.get("access_until")),
            grace_ends_at=parse_time(body.get("grace_ends_at")),
            required_tier=body.get("required_tier"),
            upgrade_url=body.get("upgrade_url"),
        )
