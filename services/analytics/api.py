"""The analytics HTTP API: stats, the live stream and the pipeline view."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from nats.js import JetStreamContext

from services.analytics import figures, params, payloads, pipeline
from services.analytics.backfill import Backfills
from services.analytics.live import LiveClicks
from services.analytics.stats import Stats
from services.analytics.store import AnalyticsStore
from shared.contracts import link_key
from shared.http import keys, sheets
from shared.http.access import Access, is_api
from shared.http.bodies import answer
from shared.http.openapi import route
from shared.http.problems import Problem
from shared.http.streams import SlotStream
from shared.jetstream.yielding import BusyGateways

router = APIRouter(prefix="/api")


_STATS = ("/api/stats/", "/api/stream/")
_OPS = ("/api/pipeline", "/api/dlq", "/api/backfills")


def policy(method: str, path: str) -> str | None:
    """The scope an analytics call needs (SPEC, "Access"); None: public."""
    if not is_api(path):
        return None  # the console page and the web app; their calls carry the key
    if path == "/api/session":
        return keys.ANY_KEY
    if path.startswith(_STATS):
        return keys.STATS_READ
    if any(path == p or path.startswith(f"{p}/") for p in _OPS):
        return keys.OPS
    return keys.ADMIN


class Deps:
    def __init__(
        self,
        store: AnalyticsStore,
        js: JetStreamContext,
        live: LiveClicks,
        backfills: Backfills,
        access: Access,
        history: pipeline.History,
        yields: BusyGateways,
        stats: Stats,
    ) -> None:
        self.stats = stats
        self.access = access
        self.history = history
        self.yields = yields
        self.store = store
        self.js = js
        self.live = live
        self.backfills = backfills


def deps(request: Request) -> Deps:
    d: Deps = request.state.deps
    return d


Ctx = Annotated[Deps, Depends(deps)]


def _seen(request: Request) -> frozenset[str] | None:
    """The only domains (hosts) the calling key sees; None: every domain."""
    seen: frozenset[str] | None = getattr(request.state, "api_key_domains", None)
    return seen


# Every stats call may answer 503: its query outran the statement timeout,
# or every connection of the API's pool stayed busy as long.
_STATS_PROBLEMS: Final = {
    422: "a parameter is invalid (errors names each)",
    503: "the query outran the statement timeout, or every stats connection stayed busy "
    "as long, or the API keys are not loaded yet (Retry-After)",
}
_TIME: Final = "an RFC 3339 date-time, or a date (YYYY-MM-DD: its midnight UTC)"
From = Annotated[
    str | None,
    Query(alias="from", description=f"the range's start: {_TIME}; default: `to` - 7 days"),
]
To = Annotated[str | None, Query(description=f"the range's end (excluded): {_TIME}; default: now")]
OnDomain = Annotated[
    str | None,
    Query(description="the link's domain (its host); absent: the default domain"),
]


Interval = Annotated[
    str | None,
    Query(
        description="the series' buckets: `hour` (a range of at most 31 days) or `day` "
        "(at most 3,660); default: day"
    ),
]
Limit = Annotated[
    str | None,
    Query(description=f"entries per list, 1 to 100; default: {params.LIST_LIMIT}"),
]
IncludeBots = Annotated[
    str | None, Query(description="`true` counts bots' clicks too; default: false")
]


async def _figures(
    code: str,
    request: Request,
    ctx: Deps,
    query: tuple[str | None, str | None, str | None, str | None, str | None, str | None],
) -> tuple[payloads.LinkStats, datetime, datetime]:
    """A link's figures and their range, for the stats call and its CSV
    export alike: the same parameters, checked the same way."""
    from_, to, interval, limit, include_bots, domain = query
    every = params.interval("day" if interval is None else interval)
    start, end = params.series_range(from_, to, every)
    n = params.limit(limit, params.LIST_LIMIT)
    bots = params.include_bots(include_bots)
    link = ctx.stats.link(code, params.domain(domain))
    seen = ctx.stats.seen(link[0] or ctx.stats.default_host, _seen(request))
    if not seen:  # another domain's link than the key sees: as unknown to it as none
        raise Problem(404, f"no link {code!r} this key sees")
    return await ctx.stats.link_stats(link, start, end, every, bots, n), start, end


@router.get(
    "/stats/links/{code}",
    **route(
        200,
        payloads.LinkStats,
        payloads.EXAMPLE_STATS,
        says="the link's clicks over the range",
        problems=_STATS_PROBLEMS,
    ),
)
async def link_stats(
    code: str,
    request: Request,
    ctx: Ctx,
    from_: From = None,
    to: To = None,
    interval: Interval = None,
    limit: Limit = None,
    include_bots: IncludeBots = None,
    domain: OnDomain = None,
) -> Response:
    query = (from_, to, interval, limit, include_bots, domain)
    stats, _, _ = await _figures(code, request, ctx, query)
    return answer(stats)


@router.get(
    "/stats/links/{code}/export",
    **route(
        media={
            sheets.MEDIA_TYPE: "the figures of `GET /api/stats/links/{code}` as CSV, one a row: "
            "`section,key,count,visitors`; sections `total`, `series` (keyed by the bucket's "
            "start), `referrers`, `countries`, `devices`, `browsers`, `oses` (keyed by the "
            "value), `others` (keyed by the list's name) and `destinations` (keyed by an A/B "
            "side's index); an attachment"
        },
        problems={**_STATS_PROBLEMS, 404: "no such link on a domain this key sees"},
    ),
)
async def link_stats_export(
    code: str,
    request: Request,
    ctx: Ctx,
    from_: From = None,
    to: To = None,
    interval: Interval = None,
    limit: Limit = None,
    include_bots: IncludeBots = None,
    domain: OnDomain = None,
) -> Response:
    query = (from_, to, interval, limit, include_bots, domain)
    stats, start, end = await _figures(code, request, ctx, query)
    return Response(
        figures.csv(stats),
        media_type=sheets.MEDIA_TYPE,
        headers=sheets.attachment(figures.filename(stats, start, end)),
    )


@router.get(
    "/stats/links-created",
    **route(
        200,
        payloads.LinksCreated,
        payloads.EXAMPLE_CREATED,
        says="links created per day, every day from `from` to `to`",
        problems={**_STATS_PROBLEMS, 403: "the key is limited to domains"},
    ),
)
async def links_created(
    request: Request,
    ctx: Ctx,
    from_: Annotated[
        str | None,
        Query(alias="from", description=f"the first day: {_TIME}; default: `to` - 30 days"),
    ] = None,
    to: Annotated[str | None, Query(description=f"the last day: {_TIME}; default: today")] = None,
) -> Response:
    if _seen(request) is not None:
        # Counted for every domain at once: a key limited to domains has no share of it.
        raise Problem(403, "links created per day covers every domain: this key sees some")
    start, end = params.date_range(from_, to)
    return answer(await ctx.stats.links_created(start, end))


@router.get(
    "/stats/top",
    **route(
        200,
        payloads.TopLinks,
        payloads.EXAMPLE_TOP,
        says="the most clicked links of the range",
        problems=_STATS_PROBLEMS,
    ),
)
async def top(
    request: Request,
    ctx: Ctx,
    from_: From = None,
    to: To = None,
    limit: Annotated[str | None, Query(description="links, 1 to 100; default: 10")] = None,
) -> Response:
    # No series, but the same scan as a daily one: the same bound.
    start, end = params.series_range(from_, to, "day")
    seen = ctx.stats.seen(None, _seen(request))
    return answer(await ctx.stats.top(start, end, params.limit(limit, 10), seen))


@router.get(
    "/stats/orphans",
    **route(
        200,
        payloads.OrphanStats,
        payloads.EXAMPLE_ORPHANS,
        says="requests that matched no link: counts per kind and the most requested paths",
        problems=_STATS_PROBLEMS,
    ),
)
async def orphans(
    request: Request,
    ctx: Ctx,
    from_: From = None,
    to: To = None,
    domain: Annotated[
        str | None,
        Query(description="only this domain's (its host); default: every domain"),
    ] = None,
) -> Response:
    # Hourly rows, the bound of a daily series (as /stats/top).
    start, end = params.series_range(from_, to, "day")
    return answer(await ctx.stats.orphans(start, end, params.domain(domain), _seen(request)))


@router.get(
    "/stream/clicks",
    **route(
        media={"text/event-stream": "one `click` event per click, live (Server-Sent Events)"},
        problems={
            429: "as many live streams are open as this key, or this server, may have; "
            "or too many failed authentications from this address (Retry-After)",
        },
    ),
)
async def stream(
    ctx: Ctx,
    request: Request,
    code: Annotated[str | None, Query(description="only this link's clicks")] = None,
    domain: OnDomain = None,
) -> StreamingResponse:
    release = ctx.live.admit(request.state.api_key)
    # The key was checked when the stream opened; a revocation ends it.
    allowed = ctx.access.still_allows(request.state.api_key, keys.STATS_READ)
    return SlotStream(
        release,
        ctx.live.events(
            None if code is None else link_key(*ctx.stats.link(code, params.domain(domain))),
            allowed,
            ctx.stats.seen(None, _seen(request)),
        ),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.get(
    "/session",
    **route(200, payloads.Session, payloads.EXAMPLE_SESSION, says="the presented key"),
)
async def session(ctx: Ctx, request: Request) -> Response:
    """The presented key's name and what it may do (the web app offers no more)."""
    name: str | None = request.state.api_key
    return answer(payloads.Session(name=name, scopes=ctx.access.scopes(name)))


@router.get(
    "/pipeline",
    **route(
        200,
        payloads.PipelineStatus,
        payloads.EXAMPLE_PIPELINE,
        says="each durable consumer's backlog and lag, the DLQ's depth, the gateways' load",
    ),
)
async def pipeline_status(ctx: Ctx) -> Response:
    lags = await pipeline.status(ctx.js)
    # Why a lag grows during a spike: the click workers hold off for the gateways.
    return answer(lags.view(ctx.yields.view()))


@router.get(
    "/pipeline/history",
    **route(
        200,
        payloads.PipelineHistory,
        payloads.EXAMPLE_HISTORY,
        says="this replica's samples of the last minutes",
    ),
)
async def pipeline_history(ctx: Ctx) -> Response:
    """Each consumer's pending messages and lag over the last minutes,
    sampled every ``every`` seconds (this replica's samples)."""
    return answer(ctx.history.view())
