"""A link's figures as CSV (``GET /api/stats/links/{code}/export``): what
``GET /api/stats/links/{code}`` answers, one figure a row.

Columns ``section,key,count,visitors``:

- ``total`` (no key): the clicks and distinct visitors of the range;
- ``series``, keyed by the bucket's start (RFC 3339): its clicks and visitors;
- ``referrers``, ``countries``, ``devices``, ``browsers``, ``oses``, keyed
  by the value: its clicks (most clicked first, at most ``limit``);
- ``others``, keyed by a list's name: the clicks of the values past its ``limit``;
- ``destinations``, keyed by an A/B side's index: its clicks and visitors
  (no rows for a link without a split).

``visitors`` is empty where the answer has none (the lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

import msgspec

from services.analytics.payloads import LinkStats
from shared.http import sheets

HEADER: Final = ("section", "key", "count", "visitors")
LISTS: Final = ("referrers", "countries", "devices", "browsers", "oses")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


def records(stats: LinkStats) -> Iterator[tuple[Any, ...]]:
    yield HEADER
    yield ("total", None, stats.total, stats.visitors)
    for point in stats.series:
        yield ("series", point.ts, point.count, point.visitors)
    for name in LISTS:
        for entry in getattr(stats, name):
            value, count = msgspec.structs.astuple(entry)
            yield (name, value, count, None)
    for name in LISTS:
        yield ("others", name, getattr(stats.others, name), None)
    for side in stats.destinations:
        yield ("destinations", side.destination, side.count, side.visitors)


def csv(stats: LinkStats) -> bytes:
    return sheets.rows(records(stats))


def filename(stats: LinkStats, start: datetime, end: datetime) -> str:
    """``<domain>_<code>_<from>_<to>.csv``, in characters any file system takes."""
    parts = (stats.domain or "default", stats.code, f"{start:%Y%m%dT%H%M}", f"{end:%Y%m%dT%H%M}")
    return "_".join(_UNSAFE.sub("-", p) for p in parts) + ".csv"
