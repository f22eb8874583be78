"""The analytics HTTP API: stats, the live stream and the pipeline view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from nats.js import JetStreamContext
from starlette.types import Receive, Scope, Send

from services.analytics import params, pipeline
from services.analytics.backfill import Backfills
from services.analytics.live import LiveClicks
from services.analytics.stats import Stats
from services.analytics.store import AnalyticsStore
from shared.http import keys
from shared.http.access import Access, is_api
from shared.http.openapi import event_stream, problem, problems
from shared.http.problems import FieldError, Problem
from shared.jetstream.yielding import BusyGateways

router = APIRouter(prefix="/api")
_encoder = msgspec.json.Encoder()


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


def json(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


# Every stats call may answer 503: its query outran the statement timeout,
# or every connection of the API's pool stayed busy as long.
_STATS_ANSWERS = {
    **problems(422),
    **problem(
        503,
        "the query outran the statement timeout, or every stats connection stayed busy "
        "as long, or the API keys are not loaded yet (Retry-After)",
    ),
}


@router.get("/stats/links/{code}", responses=_STATS_ANSWERS)
async def link_stats(code: str, ctx: Ctx, request: Request) -> Response:
    q = request.query_params
    interval = params.interval(q.get("interval", "day"))
    start, end = params.series_range(q.get("from"), q.get("to"), interval)
    limit = params.limit(q.get("limit"), params.LIST_LIMIT)
    include_bots = q.get("include_bots", "false").lower()
    if include_bots not in ("true", "false", "1", "0"):
        raise Problem.invalid([FieldError("include_bots", "must be true or false")])
    return json(
        await ctx.stats.link_stats(code, start, end, interval, include_bots in ("true", "1"), limit)
    )


@router.get("/stats/links-created", responses=_STATS_ANSWERS)
async def links_created(ctx: Ctx, request: Request) -> Response:
    start, end = params.date_range(request.query_params.get("from"), request.query_params.get("to"))
    return json({"days": await ctx.stats.links_created(start, end)})


@router.get("/stats/top", responses=_STATS_ANSWERS)
async def top(ctx: Ctx, request: Request) -> Response:
    q = request.query_params
    # No series, but the same scan as a daily one: the same bound.
    start, end = params.series_range(q.get("from"), q.get("to"), "day")
    return json({"items": await ctx.stats.top(start, end, params.limit(q.get("limit"), 10))})


@router.get(
    "/stream/clicks",
    response_class=StreamingResponse,
    responses={
        **event_stream("one `click` event per click, live (Server-Sent Events)"),
        **problem(
            429,
            "as many live streams are open as this key, or this server, may have; "
            "or too many failed authentications from this address (Retry-After)",
        ),
    },
)
async def stream(ctx: Ctx, request: Request, code: str | None = None) -> StreamingResponse:
    release = ctx.live.admit(request.state.api_key)
    # The key was checked when the stream opened; a revocation ends it.
    allowed = ctx.access.still_allows(request.state.api_key, keys.STATS_READ)
    return _Stream(
        release,
        ctx.live.events(code, allowed),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


class _Stream(StreamingResponse):
    """Gives its live-stream slot back however the response ends: a client
    gone before the first event never starts the generator, whose own
    ``finally`` would then never run."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get("/session")
async def session(ctx: Ctx, request: Request) -> Response:
    """The presented key's name and what it may do (the web app offers no more)."""
    name: str | None = request.state.api_key
    return json({"name": name, "scopes": ctx.access.scopes(name)})


@router.get("/pipeline")
async def pipeline_status(ctx: Ctx) -> Response:
    view = await pipeline.status(ctx.js)
    # Why a lag grows during a spike: the click workers hold off for the gateways.
    view["redirects_busy"] = ctx.yields.view()
    return json(view)


@router.get("/pipeline/history")
async def pipeline_history(ctx: Ctx) -> Response:
    """Each consumer's pending messages and lag over the last minutes,
    sampled every ``every`` seconds (this replica's samples)."""
    return json({"every": ctx.history.every, "items": ctx.history.items()})
