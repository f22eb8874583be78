"""Bodies of every HTTP service's API: a request's read with a bound (past
it, 413 while it arrives: the rest is never buffered), an answer written
from its declared type (``shared.http.openapi.route`` documents both)."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared.contracts import INVALID
from shared.http.problems import Problem

# SPEC ("Gateway HTTP API"): bodies over 16 KiB get 413.
MAX_BODY: Final = 16 * 1024
_encoder: Final = msgspec.json.Encoder()


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


def answer(body: msgspec.Struct, status: int = 200) -> Response:
    """``body``, one of the API's declared types, as its JSON answer."""
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")
