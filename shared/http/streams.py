"""A streamed answer that holds a slot (a live stream's, an export's) and
gives it back however the response ends: a client gone before the first
chunk never starts the body's generator, whose own ``finally`` would then
never run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class SlotStream(StreamingResponse):
    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
