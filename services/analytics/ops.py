"""Operations: backfills and the DLQ (the web app's Operations page calls these)."""

from __future__ import annotations

from typing import Annotated, Final

import fastapi
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.analytics import params, payloads
from services.analytics.api import Ctx
from services.analytics.backfill import RUNNING
from shared.http import bodies
from shared.http.bodies import answer
from shared.http.openapi import route
from shared.http.problems import FieldError, Problem
from shared.jetstream import dlq, topology

router = APIRouter()
# A stream sequence: JetStream's are unsigned 64-bit and start at 1 (0 and
# negatives reached the server as bad requests, answered 500 here before).
Seq = Annotated[int, fastapi.Path(ge=1, le=2**64 - 1)]


_BACKFILL_FOUND: Final = {404: "no backfill has this id"}


@router.post(
    "/api/backfills",
    **route(
        202,
        payloads.Backfill,
        payloads.EXAMPLE_BACKFILL,
        says="the backfill, pending (or done at once: nothing in the range)",
        accepts=payloads.NewBackfill,
        accepts_example=payloads.EXAMPLE_NEW_BACKFILL,
        problems={
            400: "the body is not JSON",
            413: "the body is over 16 KiB",
            422: "a field is invalid, `from` is after `to`, or a re-classifying one starts "
            "before the oldest click CLICKS holds (errors names each)",
            429: f"{RUNNING} backfills are running in this process, or writes by this key or "
            "failed authentications from this address are over their rate (Retry-After)",
        },
    ),
)
async def create_backfill(request: Request, ctx: Ctx) -> Response:
    new = params.new_backfill(await bodies.read_json(request))
    start, end = params.time_range(new.from_, new.to)
    return answer(await ctx.backfills.create(start, end, new.reclassify), 202)


@router.get(
    "/api/backfills",
    **route(200, payloads.BackfillList, payloads.EXAMPLE_BACKFILLS, says="every backfill"),
)
async def list_backfills(ctx: Ctx) -> Response:
    return answer(payloads.BackfillList(items=await ctx.backfills.list()))


@router.get(
    "/api/backfills/{backfill_id}",
    **route(
        200,
        payloads.Backfill,
        payloads.EXAMPLE_BACKFILL,
        says="the backfill and its progress",
        problems=_BACKFILL_FOUND,
    ),
)
async def get_backfill(backfill_id: str, ctx: Ctx) -> Response:
    found = await ctx.backfills.get(backfill_id)
    if found is None:
        raise Problem(404, f"no backfill {backfill_id!r}")
    return answer(found)


@router.delete(
    "/api/backfills/{backfill_id}",
    **route(
        200,
        payloads.Backfill,
        payloads.EXAMPLE_BACKFILL,
        says="the backfill, cancelled if it was pending or running",
        problems=_BACKFILL_FOUND,
    ),
)
async def cancel_backfill(backfill_id: str, ctx: Ctx) -> Response:
    found = await ctx.backfills.cancel(backfill_id)
    if found is None:
        raise Problem(404, f"no backfill {backfill_id!r}")
    return answer(found)


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


_CONSUMER: Final = f"only this consumer's letters: one of {', '.join(sorted(_CONSUMERS))}"
_LETTER_FOUND: Final = "no such letter: never there, or another call replayed or discarded it"


@router.get(
    "/api/dlq",
    **route(
        200,
        payloads.LetterList,
        payloads.EXAMPLE_LETTERS,
        says="the oldest dead letters",
        problems={422: "a parameter is invalid (errors names each)"},
    ),
)
async def list_dlq(
    ctx: Ctx,
    consumer: Annotated[str | None, Query(description=_CONSUMER)] = None,
    limit: Annotated[str | None, Query(description="letters, 1 to 1000; default: 50")] = None,
) -> Response:
    n = params.limit(limit, 50, 1, 1000)
    letters = await dlq.list_(ctx.js, _consumer(consumer), n)
    return answer(payloads.LetterList(items=[letter.as_letter() for letter in letters]))


# Dead-letter calls are safe to repeat and to race (SPEC, "Limits"): a
# letter another call just handled is a 404, never a 5xx.
@router.post(
    "/api/dlq/replay",
    **route(
        200,
        payloads.LettersReplayed,
        payloads.EXAMPLE_REPLAYED_ALL,
        says="the letters present when the call started, replayed or left",
        problems={
            422: "`consumer` is not one of the consumers",
            503: "a replay did not happen (the cache-refresher did not answer, or the "
            "republish failed); its letter is still in the DLQ",
        },
    ),
)
async def replay_all(
    ctx: Ctx, consumer: Annotated[str | None, Query(description=_CONSUMER)] = None
) -> Response:
    try:
        done = await dlq.replay_all(ctx.js, _consumer(consumer))
    except dlq.ReplayFailed as exc:
        raise Problem(503, str(exc)) from None
    return answer(payloads.LettersReplayed(replayed=done.replayed, skipped=done.skipped))


@router.post(
    "/api/dlq/{seq}/replay",
    **route(
        200,
        payloads.LetterReplayed,
        payloads.EXAMPLE_REPLAYED,
        says="the letter, replayed and gone from the DLQ",
        problems={
            404: _LETTER_FOUND,
            422: "the letter cannot be replayed as it is (discard it), or `seq` is not a sequence",
            503: "the replay did not happen (the cache-refresher did not answer, or the "
            "republish failed); the letter is still in the DLQ",
        },
    ),
)
async def replay_one(seq: Seq, ctx: Ctx) -> Response:
    try:
        new_seq = await dlq.replay(ctx.js, seq)
    except dlq.NotInDlq as exc:
        raise Problem(404, str(exc)) from None
    except dlq.NotReplayable as exc:
        raise Problem(422, str(exc)) from None
    except dlq.ReplayFailed as exc:
        raise Problem(503, str(exc)) from None
    return answer(payloads.LetterReplayed(replayed=seq, stream_seq=new_seq))


@router.delete(
    "/api/dlq/{seq}",
    **route(
        204,
        says="discarded",
        problems={404: _LETTER_FOUND, 422: "`seq` is not a sequence"},
    ),
)
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
