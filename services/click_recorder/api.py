"""The click-recorder's HTTP API: the raw clicks it recorded, exported."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from services.click_recorder import export
from services.click_recorder.export import FORMATS, MAX_SPAN, Exports, Filter
from shared.http import keys
from shared.http.access import is_api
from shared.http.openapi import route
from shared.http.problems import Problem
from shared.http.sheets import attachment
from shared.http.streams import SlotStream

router = APIRouter(prefix="/api")


def policy(method: str, path: str) -> str | None:
    """The scope a recorder call needs (SPEC, "Access"); None: public."""
    if not is_api(path):
        return None
    if path == "/api/clicks":
        return keys.STATS_READ
    return keys.ADMIN


class Deps:
    def __init__(self, exports: Exports, default_host: str) -> None:
        self.exports = exports
        # Clicks on the default domain are stored with domain NULL.
        self.default_host = default_host

    def stored(self, host: str) -> str:
        return "" if host == self.default_host else host


_TIME: Final = "an RFC 3339 date-time, or a date (YYYY-MM-DD: its midnight UTC)"
_COLUMNS: Final = ", ".join(f"`{c}`" for c in export.COLUMNS)


@router.get(
    "/clicks",
    **route(
        media={
            FORMATS["csv"]: f"the clicks as CSV, a header row then one click a row: {_COLUMNS}; "
            "text that a spreadsheet would read as a formula starts with `'`",
            FORMATS["ndjson"]: "the clicks as JSON objects, one a line, with the same fields",
        },
        says="every recorded click of the range, oldest first, streamed (an attachment)",
        problems={
            422: "a parameter is invalid (errors names each), or the range is longer than "
            f"{MAX_SPAN.days} days",
            429: "as many exports are running on this server as it allows, or too many "
            "failed authentications from this address (Retry-After)",
        },
    ),
)
async def clicks(
    request: Request,
    from_: Annotated[
        str | None,
        Query(alias="from", description=f"the range's start: {_TIME}; default: `to` - 1 day"),
    ] = None,
    to: Annotated[
        str | None, Query(description=f"the range's end (excluded): {_TIME}; default: now")
    ] = None,
    code: Annotated[str | None, Query(description="only this code's clicks")] = None,
    domain: Annotated[
        str | None,
        Query(description="only this domain's clicks (its host); default: every domain"),
    ] = None,
    format: Annotated[
        str | None,
        Query(description="`csv` or `ndjson`; default: what Accept names first, else csv"),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    deps: Deps = request.state.deps
    start, end = export.time_range(from_, to)
    fmt = export.media(format, accept)
    wanted = export.host(domain)
    hosts = None if wanted is None else frozenset({wanted})
    # A key limited to domains sees only theirs (SPEC, "Domains").
    seen: frozenset[str] | None = getattr(request.state, "api_key_domains", None)
    if seen is not None:
        hosts = seen if hosts is None else hosts & seen
        if not hosts:
            raise Problem(403, f"this key does not see the domain {wanted!r}")
    stored = (
        None if hosts is None else frozenset("" if h == deps.default_host else h for h in hosts)
    )
    where = Filter(start, end, code, stored)
    release = deps.exports.admit()
    name = f"clicks_{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}.{fmt}"
    return SlotStream(
        release,
        deps.exports.chunks(where, fmt),
        media_type=FORMATS[fmt],
        headers={**attachment(name), "cache-control": "no-store", "x-accel-buffering": "no"},
    )
