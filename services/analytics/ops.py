"""Operations: backfills and the DLQ (the web app's Operations page calls these)."""

from __future__ import annotations

from typing import Annotated, Any, Final

import fastapi
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.analytics import params
from services.analytics.api import Ctx, json
from shared.http import bodies
from shared.http.openapi import problems
from shared.http.problems import FieldError, Problem
from shared.jetstream import dlq, topology

router = APIRouter()
# A stream sequence: JetStream's are unsigned 64-bit and start at 1 (0 and
# negatives reached the server as bad requests, answered 500 here before).
Seq = Annotated[int, fastapi.Path(ge=1, le=2**64 - 1)]


@router.post("/api/backfills", status_code=202, responses=problems(400, 413, 422, 429))
async def create_backfill(request: Request, ctx: Ctx) -> Response:
    body: Any = await bodies.read_json(request)
    if not isinstance(body, dict) or not {"from", "to"} <= body.keys():
        raise Problem.invalid([FieldError("body", "must be an object with 'from' and 'to'")])
    if not all(isinstance(body[k], str) for k in ("from", "to")):
        raise Problem.invalid([FieldError("from", "'from' and 'to' must be date-times")])
    reclassify = body.get("reclassify", False)
    if not isinstance(reclassify, bool):
        raise Problem.invalid([FieldError("reclassify", "must be true or false")])
    start, end = params.time_range(body["from"], body["to"])
    return json(await ctx.backfills.create(start, end, reclassify), 202)


@router.get("/api/backfills")
async def list_backfills(ctx: Ctx) -> Response:
    return json({"items": await ctx.backfills.list()})


@router.get("/api/backfills/{backfill_id}", responses=problems(404))
async def get_backfill(backfill_id: str, ctx: Ctx) -> Response:
    found = await ctx.backfills.get(backfill_id)
    if found is None:
        raise Problem(404, f"no backfill {backfill_id!r}")
    return json(found)


@router.delete("/api/backfills/{backfill_id}", responses=problems(404))
async def cancel_backfill(backfill_id: str, ctx: Ctx) -> Response:
    found = await ctx.backfills.cancel(backfill_id)
    if found is None:
        raise Problem(404, f"no backfill {backfill_id!r}")
    return json(found)


# The consumers whose letters the DLQ may hold: a name is checked against
# these before it becomes part of a subject filter.
_CONSUMERS: Final = frozenset(
    name for c in topology.CONSUMERS for name in (c.name, topology.rescuer(c).name)
)


def _consumer(name: str | None) -> str | None:
    if name is not None and name not in _CONSUMERS:
        raise Problem.invalid(
            [FieldError("consumer", f"must be one of {', '.join(sorted(_CONSUMERS))}")]
        )
    return name


@router.get("/api/dlq", responses=problems(422))
async def list_dlq(ctx: Ctx, request: Request) -> Response:
    q = request.query_params
    n = params.limit(q.get("limit"), 50, 1, 1000)
    letters = await dlq.list_(ctx.js, _consumer(q.get("consumer")), n)
    return json({"items": [letter.as_json() for letter in letters]})


# Dead-letter calls are safe to repeat and to race (SPEC, "Limits"): a
# letter another call just handled is a 404, never a 5xx.
@router.post("/api/dlq/replay", responses=problems(422, 503))
async def replay_all(ctx: Ctx, consumer: str | None = None) -> Response:
    try:
        done = await dlq.replay_all(ctx.js, _consumer(consumer))
    except dlq.ReplayFailed as exc:
        raise Problem(503, str(exc)) from None
    return json({"replayed": done.replayed, "skipped": done.skipped})


@router.post("/api/dlq/{seq}/replay", responses=problems(404, 422, 503))
async def replay_one(seq: Seq, ctx: Ctx) -> Response:
    try:
        new_seq = await dlq.replay(ctx.js, seq)
    except dlq.NotInDlq as exc:
        raise Problem(404, str(exc)) from None
    except dlq.NotReplayable as exc:
        raise Problem(422, str(exc)) from None
    except dlq.ReplayFailed as exc:
        raise Problem(503, str(exc)) from None
    return json({"replayed": seq, "stream_seq": new_seq})


@router.delete("/api/dlq/{seq}", status_code=204, responses=problems(404, 422))
async def discard(seq: Seq, ctx: Ctx) -> Response:
    try:
        await dlq.discard(ctx.js, seq)
    except dlq.NotInDlq as exc:
        raise Problem(404, str(exc)) from None
    return Response(status_code=204)


@router.get("/console", include_in_schema=False)
async def console() -> RedirectResponse:
    """The operations console lives on as the web app's Operations page."""
    return RedirectResponse("/app/#/operations", status_code=308)
