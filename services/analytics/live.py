"""The live click stream: one core-NATS subscription fanned out to SSE clients.

Clicks on ``clicks.>`` reach core subscribers as well as the stream, so the
live view costs the pipeline nothing; a slow browser only loses its own
oldest events (its queue is bounded), never slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.contracts import Click

_decode = msgspec.json.Decoder(Click).decode
QUEUE_SIZE = 256
KEEPALIVE = 15.0
# How often an open stream asks whether its key is still good: a revoked key
# loses the stream within this (plus the KV watch's milliseconds).
RECHECK = 1.0


class LiveClicks:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._listeners: set[tuple[str | None, asyncio.Queue[bytes]]] = set()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe("clicks.>", cb=self._on_click)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_click(self, msg: Msg) -> None:
        if not self._listeners:
            return
        try:
            click = _decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        for code, queue in self._listeners:
            if code is None or code == click.code:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(msg.data)

    async def events(
        self, code: str | None, allowed: Callable[[], bool] = lambda: True
    ) -> AsyncIterator[bytes]:
        """Server-Sent Events for one client until it disconnects, or until
        ``allowed`` says its key no longer may (revoked, expired)."""
        listener = (code, asyncio.Queue[bytes](QUEUE_SIZE))
        self._listeners.add(listener)
        try:
            yield b": connected\n\n"
            idle = 0.0
            while allowed():
                try:
                    data = await asyncio.wait_for(listener[1].get(), RECHECK)
                except TimeoutError:
                    idle += RECHECK
                    if idle >= KEEPALIVE:
                        idle = 0.0
                        yield b": keepalive\n\n"
                    continue
                idle = 0.0
                yield b"event: click\ndata: " + data + b"\n\n"
        finally:
            self._listeners.discard(listener)
