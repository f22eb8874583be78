"""The analytics API's bodies: what each call takes and gives, as declared types.

Validation (``services.analytics.params``) produces ``NewBackfill``; the
routes answer with the others, which the stats, pipeline, backfill and DLQ
code builds. The OpenAPI document's schemas are generated from these
Structs (``shared.http.openapi``), so a client generated from it reads
exactly what is sent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from shared.jetstream.dlq import Letter
from shared.jetstream.yielding import BusyState

__all__ = ["BusyState", "Letter"]

# Times answered as text: ISO 8601 / RFC 3339 with the UTC offset.
Instant = Annotated[
    str, msgspec.Meta(extra_json_schema={"format": "date-time"}, description="RFC 3339, UTC")
]
# Times taken: a date-time or a whole day (params._time).
TimeArg = Annotated[
    str,
    msgspec.Meta(
        min_length=1, description="an RFC 3339 date-time, or a date (YYYY-MM-DD: its midnight UTC)"
    ),
]
Count = Annotated[int, msgspec.Meta(ge=0)]


# --- /api/stats ----------------------------------------------------------------


class SeriesPoint(msgspec.Struct, kw_only=True, frozen=True):
    """One bucket of a series: ``[ts, ts + interval)``."""

    ts: Annotated[datetime, msgspec.Meta(description="the bucket's start, UTC")]
    count: Count
    visitors: Annotated[Count, msgspec.Meta(description="distinct visitors in the bucket")]


class ReferrerCount(msgspec.Struct, frozen=True):
    referrer: Annotated[str, msgspec.Meta(description="the referring host, or `direct`")]
    count: Count


class CountryCount(msgspec.Struct, frozen=True):
    country: Annotated[str, msgspec.Meta(description="ISO 3166-1 alpha-2, or `unknown`")]
    count: Count


class DeviceCount(msgspec.Struct, frozen=True):
    device: str
    count: Count


class BrowserCount(msgspec.Struct, frozen=True):
    browser: str
    count: Count


class OsCount(msgspec.Struct, frozen=True):
    os: str
    count: Count


class DestinationCount(msgspec.Struct, kw_only=True, frozen=True):
    """One side of an A/B split: its clicks and distinct visitors."""

    destination: Annotated[int, msgspec.Meta(ge=0, description="its index in `destinations`")]
    count: Count
    visitors: Count


class OtherCounts(msgspec.Struct, kw_only=True, frozen=True):
    """By list: the clicks of the values past its ``limit`` entries."""

    referrers: Count
    countries: Count
    devices: Count
    browsers: Count
    oses: Count


class LinkStats(msgspec.Struct, kw_only=True, frozen=True):
    """A link's clicks over ``[from, to)``: the series by interval, and the
    most frequent values of each dimension (at most ``limit`` each)."""

    code: str
    domain: Annotated[str | None, msgspec.Meta(description="the link's domain; null: the default")]
    total: Count
    visitors: Annotated[Count, msgspec.Meta(description="distinct visitors over the range")]
    series: list[SeriesPoint]
    referrers: list[ReferrerCount]
    countries: list[CountryCount]
    devices: list[DeviceCount]
    browsers: list[BrowserCount]
    oses: list[OsCount]
    others: OtherCounts
    destinations: Annotated[
        list[DestinationCount],
        msgspec.Meta(description="each A/B destination's clicks and visitors; empty: no split"),
    ] = []


class DayCount(msgspec.Struct, kw_only=True, frozen=True):
    day: date
    count: Count


class LinksCreated(msgspec.Struct, kw_only=True, frozen=True):
    """Links created per day (UTC), every day of the range."""

    days: list[DayCount]


class TopLink(msgspec.Struct, kw_only=True, frozen=True):
    code: str
    domain: Annotated[str | None, msgspec.Meta(description="the link's domain; null: the default")]
    count: Count


class TopLinks(msgspec.Struct, kw_only=True, frozen=True):
    """The most clicked links of the range (human clicks), most first."""

    items: list[TopLink]


class OrphanKinds(msgspec.Struct, kw_only=True, frozen=True):
    """Orphan visits by kind."""

    base_url: Annotated[Count, msgspec.Meta(description="visits to `/`")]
    invalid_code: Annotated[Count, msgspec.Meta(description="paths that cannot be a code")]
    not_found: Annotated[Count, msgspec.Meta(description="unknown or deleted codes")]


class OrphanPath(msgspec.Struct, kw_only=True, frozen=True):
    path: Annotated[str, msgspec.Meta(description="as requested, cut to 256 characters")]
    kind: Literal["base_url", "invalid_code", "not_found"]
    count: Count


class OrphanStats(msgspec.Struct, kw_only=True, frozen=True):
    """Requests that matched no link over ``[from, to)`` (by hour): counts
    per kind, and the most requested paths (at most 20). Visits a gateway
    summed under path ``*`` (past its 1,000 paths of a second) count in
    ``total`` and ``kinds``, not in ``top_paths``."""

    from_: Annotated[datetime, msgspec.Meta(description="the range's start")] = msgspec.field(
        name="from"
    )
    to: Annotated[datetime, msgspec.Meta(description="the range's end (excluded)")]
    domain: Annotated[
        str | None, msgspec.Meta(description="the domain asked for; null: every domain")
    ]
    total: Count
    kinds: OrphanKinds
    top_paths: list[OrphanPath]


# --- /api/session ---------------------------------------------------------------


class Session(msgspec.Struct, kw_only=True, frozen=True):
    """The presented key: its name (null with authentication off) and scopes."""

    name: str | None
    scopes: list[str]


# --- /api/pipeline --------------------------------------------------------------


class ConsumerStatus(msgspec.Struct, kw_only=True, frozen=True):
    """A durable consumer's backlog; only ``error`` besides its names if it
    does not exist."""

    stream: str
    consumer: str
    pending: Count | UnsetType = UNSET
    ack_pending: Count | UnsetType = UNSET
    redelivered: Count | UnsetType = UNSET
    lag_seconds: (
        Annotated[
            float,
            msgspec.Meta(ge=0, description="age of the oldest message not acknowledged; 0: none"),
        ]
        | UnsetType
    ) = UNSET
    last_active: Instant | UnsetType | None = UNSET
    dlq_depth: Count | UnsetType = UNSET
    error: str | UnsetType = UNSET


class PipelineStatus(msgspec.Struct, kw_only=True, frozen=True):
    """How far behind each durable consumer is, and why it may be."""

    consumers: list[ConsumerStatus]
    dlq: Annotated[dict[str, Count], msgspec.Meta(description="dead letters by consumer")]
    redirects_busy: BusyState


class ConsumerSample(msgspec.Struct, kw_only=True, frozen=True):
    pending: Count
    lag_seconds: float


class PipelineSample(msgspec.Struct, kw_only=True, frozen=True):
    ts: Instant
    consumers: dict[str, ConsumerSample]


class PipelineHistory(msgspec.Struct, kw_only=True, frozen=True):
    """Each consumer's pending messages and lag over the last minutes, oldest first."""

    every: Annotated[float, msgspec.Meta(gt=0, description="seconds between samples")]
    items: list[PipelineSample]


# --- /api/backfills -------------------------------------------------------------

BackfillState = Literal["pending", "running", "done", "failed", "cancelled"]


class NewBackfill(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /api/backfills``: count the clicks ``CLICKS`` stored in
    ``[from, to)`` again (none twice)."""

    from_: TimeArg = msgspec.field(name="from")
    to: TimeArg
    reclassify: Annotated[
        bool,
        msgspec.Meta(
            description="replace the range's counts (whole hours), deriving each click's "
            "bot flag again"
        ),
    ] = False


class Backfill(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    status: Annotated[BackfillState, msgspec.Meta(description="the same as `state`")]
    state: BackfillState
    from_: Instant = msgspec.field(name="from")
    to: Instant
    processed: Count
    total: Annotated[Count, msgspec.Meta(description="stream messages in the range")]
    error: str | None
    created_at: Instant
    updated_at: Instant


class BackfillList(msgspec.Struct, kw_only=True, frozen=True):
    """Every backfill, newest first."""

    items: list[Backfill]


# --- /api/dlq -------------------------------------------------------------------


class LetterList(msgspec.Struct, kw_only=True, frozen=True):
    """The oldest dead letters (of one consumer), oldest first."""

    items: list[Letter]


class LettersReplayed(msgspec.Struct, kw_only=True, frozen=True):
    replayed: Count
    skipped: Annotated[Count, msgspec.Meta(description="letters not replayable: discard them")]


class LetterReplayed(msgspec.Struct, kw_only=True, frozen=True):
    replayed: Annotated[int, msgspec.Meta(description="the letter's DLQ sequence")]
    stream_seq: Annotated[
        int | None,
        msgspec.Meta(description="where the click was published again; null for a link's letter"),
    ]


# The document's examples.
_AT: Final = "2026-12-02T09:30:00.123000+00:00"
_HOUR: Final = datetime(2026, 12, 2, 9, tzinfo=UTC)
EXAMPLE_STATS: Final = LinkStats(
    code="launch",
    domain=None,
    total=42,
    visitors=30,
    series=[
        SeriesPoint(ts=_HOUR, count=40, visitors=29),
        SeriesPoint(ts=_HOUR.replace(hour=10), count=2, visitors=1),
    ],
    referrers=[ReferrerCount("news.example.com", 30), ReferrerCount("direct", 10)],
    countries=[CountryCount("DE", 25), CountryCount("US", 17)],
    devices=[DeviceCount("mobile", 28), DeviceCount("desktop", 14)],
    browsers=[BrowserCount("Chrome", 30), BrowserCount("Firefox", 12)],
    oses=[OsCount("Android", 20), OsCount("Windows", 14)],
    others=OtherCounts(referrers=2, countries=0, devices=0, browsers=0, oses=8),
    destinations=[
        DestinationCount(destination=0, count=10, visitors=8),
        DestinationCount(destination=1, count=32, visitors=22),
    ],
)
EXAMPLE_CREATED: Final = LinksCreated(
    days=[DayCount(day=date(2026, 12, 1), count=3), DayCount(day=date(2026, 12, 2), count=5)]
)
EXAMPLE_TOP: Final = TopLinks(
    items=[
        TopLink(code="launch", domain=None, count=42),
        TopLink(code="docs", domain="go.example.com", count=7),
    ]
)
EXAMPLE_ORPHANS: Final = OrphanStats(
    from_=datetime(2026, 11, 15, tzinfo=UTC),
    to=datetime(2026, 11, 22, tzinfo=UTC),
    domain=None,
    total=1370,
    kinds=OrphanKinds(base_url=120, invalid_code=1100, not_found=150),
    top_paths=[
        OrphanPath(path="/wp-login.php", kind="invalid_code", count=640),
        OrphanPath(path="/", kind="base_url", count=120),
        OrphanPath(path="/summer-sale", kind="not_found", count=95),
    ],
)
EXAMPLE_SESSION: Final = Session(name="dashboard", scopes=["links:read", "stats:read", "ops"])
EXAMPLE_PIPELINE: Final = PipelineStatus(
    consumers=[
        ConsumerStatus(
            stream="CLICKS",
            consumer="click-recorder",
            pending=120,
            ack_pending=50,
            redelivered=0,
            lag_seconds=1.25,
            last_active=_AT,
            dlq_depth=1,
        ),
        ConsumerStatus(
            stream="LINKS",
            consumer="cache-refresher",
            error="consumer does not exist (run linkflow migrate)",
        ),
    ],
    dlq={"click-recorder": 1},
    redirects_busy=BusyState(busy=True, gateway="10.0.0.5:8080", load=0.93, yield_lag_seconds=30.0),
)
EXAMPLE_HISTORY: Final = PipelineHistory(
    every=5.0,
    items=[
        PipelineSample(
            ts=_AT, consumers={"click-recorder": ConsumerSample(pending=120, lag_seconds=1.25)}
        )
    ],
)
EXAMPLE_NEW_BACKFILL: Final = NewBackfill(from_="2026-12-01", to="2026-12-02T00:00:00Z")
EXAMPLE_BACKFILL: Final = Backfill(
    id="5f0c2a9e1b7d4c3a",
    status="running",
    state="running",
    from_="2026-12-01T00:00:00+00:00",
    to="2026-12-02T00:00:00+00:00",
    processed=1200,
    total=5000,
    error=None,
    created_at=_AT,
    updated_at=_AT,
)
EXAMPLE_BACKFILLS: Final = BackfillList(items=[EXAMPLE_BACKFILL])
EXAMPLE_LETTERS: Final = LetterList(
    items=[
        Letter(
            seq=7,
            subject="dlq.CLICKS.click-recorder",
            consumer="click-recorder",
            headers={
                "Linkflow-Original-Subject": "clicks.launch",
                "Linkflow-Attempts": "5",
                "Linkflow-Error": "UniqueViolationError: ...",
            },
            payload='{"id":"01JEXAMPLE","code":"launch"}',
            payload_encoding="utf-8",
            stored_at=_AT,
        )
    ]
)
EXAMPLE_REPLAYED_ALL: Final = LettersReplayed(replayed=3, skipped=1)
EXAMPLE_REPLAYED: Final = LetterReplayed(replayed=7, stream_seq=1042)
