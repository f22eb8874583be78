"""Query parameters of the analytics API, checked together: every problem is
reported at once as a 422 problem+json."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from services.analytics.payloads import NewBackfill
from shared.http.problems import FieldError, Problem

INTERVALS: Final = ("hour", "day")
DEFAULT_RANGE: Final = timedelta(days=7)
# The longest range a series of each interval may span (SPEC, "Analytics
# HTTP API"): an unbounded one asked 87.6 million hourly points of one query.
SPANS: Final = {"hour": timedelta(days=31), "day": timedelta(days=3660)}
# Entries per list of a stats answer (referrers, countries, ...).
LIST_LIMIT: Final = 10


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time or a date (YYYY-MM-DD)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def time_range(
    start: str | None, end: str | None, default: timedelta = DEFAULT_RANGE
) -> tuple[datetime, datetime]:
    """``[from, to)``; ``to`` defaults to now and ``from`` to ``default`` before it."""
    errors: list[FieldError] = []
    parsed: dict[str, datetime] = {}
    for name, value in (("from", start), ("to", end)):
        if value is not None:
            try:
                parsed[name] = _time(value)
            except ValueError as exc:
                errors.append(FieldError(name, str(exc)))
    if errors:
        raise Problem.invalid(errors)
    to = parsed.get("to", datetime.now(UTC))
    frm = parsed.get("from", to - default)
    if frm > to:
        raise Problem.invalid([FieldError("from", "must not be after 'to'")])
    return frm, to


def series_range(
    start: str | None, end: str | None, interval: str, default: timedelta = DEFAULT_RANGE
) -> tuple[datetime, datetime]:
    """``time_range``, refused (naming ``from``: defaults are always within
    the bound) when longer than ``interval``'s series may span."""
    frm, to = time_range(start, end, default)
    span = SPANS[interval]
    if to - frm > span:
        raise Problem.invalid(
            [FieldError("from", f"a series by {interval} spans at most {span.days:,} days")]
        )
    return frm, to


def date_range(start: str | None, end: str | None) -> tuple[date, date]:
    frm, to = series_range(start, end, "day", timedelta(days=30))
    return frm.date(), to.date()


def interval(value: str) -> str:
    if value not in INTERVALS:
        raise Problem.invalid([FieldError("interval", "must be 'hour' or 'day'")])
    return value


def limit(raw: str | None, default: int, low: int = 1, high: int = 100) -> int:
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise Problem.invalid([FieldError("limit", "must be an integer")]) from None
    if not low <= value <= high:
        raise Problem.invalid([FieldError("limit", f"must be between {low} and {high}")])
    return value


def new_backfill(body: Any) -> NewBackfill:
    """A ``POST /api/backfills`` body, checked (its times by ``time_range``)."""
    if not isinstance(body, dict) or not {"from", "to"} <= body.keys():
        raise Problem.invalid([FieldError("body", "must be an object with 'from' and 'to'")])
    start, end = body["from"], body["to"]
    if not isinstance(start, str) or not isinstance(end, str):
        raise Problem.invalid([FieldError("from", "'from' and 'to' must be date-times")])
    reclassify = body.get("reclassify", False)
    if not isinstance(reclassify, bool):
        raise Problem.invalid([FieldError("reclassify", "must be true or false")])
    return NewBackfill(from_=start, to=end, reclassify=reclassify)


def include_bots(value: str | None) -> bool:
    flag = "false" if value is None else value.lower()
    if flag not in ("true", "false", "1", "0"):
        raise Problem.invalid([FieldError("include_bots", "must be true or false")])
    return flag in ("true", "1")


def domain(value: str | None) -> str | None:
    """A ``domain`` filter: a host as a request's ``Host`` names it (lower
    case, no trailing dot); None: every domain."""
    if value is None:
        return None
    host = value.strip().lower().rstrip(".")
    if not host or len(host) > 253 or "/" in host:
        raise Problem.invalid([FieldError("domain", "must be a host name")])
    return host
