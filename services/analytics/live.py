"""The live click stream: one core-NATS subscription fanned out to SSE clients.

Clicks on ``clicks.>`` reach core subscribers as well as the stream, so the
live view costs the pipeline nothing; a slow browser only loses its own
oldest events (its queue is bounded), never slows anyone else. The
subscription exists only while someone watches: every click delivered to
it costs nats-server and this process CPU per click (a tenth of what a
click cost in all, measured by ``linkflow bench --system``), for nothing
when no browser is open.
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
        self._lock = asyncio.Lock()

    @property
    def watching(self) -> bool:
        """Subscribed to ``clicks.>``: only while a client is connected."""
        return self._sub is not None

    async def _watched(self) -> None:
        async with self._lock:
            if self._sub is None:
                self._sub = await self._nc.subscribe("clicks.>", cb=self._on_click)
                # The server has the subscription once it answers a ping:
                # a click published after "connected" reaches the client.
                await self._nc.flush()

    async def _unwatched(self) -> None:
        async with self._lock:
            if not self._listeners and self._sub is not None:
                sub, self._sub = self._sub, None
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def stop(self) -> None:
        self._listeners.clear()
        await self._unwatched()

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
            await self._watched()
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
            await self._unwatched()
