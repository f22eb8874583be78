"""Reading a request's body with a bound: past it, 413 while it arrives (the
rest is never buffered), for every HTTP service's JSON and CSV bodies."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request

from shared.contracts import INVALID
from shared.http.problems import Problem

# SPEC ("Gateway HTTP API"): bodies over 16 KiB get 413.
MAX_BODY: Final = 16 * 1024


async def read(request: Request, limit: int = MAX_BODY) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, f"request body over {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    body = await read(request, limit)
    try:
        return msgspec.json.decode(body)
    except INVALID as exc:
        raise Problem(400, f"malformed JSON: {exc}") from None
