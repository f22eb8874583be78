"""The live click stream: one core-NATS subscription fanned out to SSE clients.

Clicks on ``clicks.>`` reach core subscribers as well as the stream, so the
live view costs the pipeline nothing; a slow browser only loses its own
oldest events (its queue is bounded), never slows anyone else. The
subscription exists only while someone watches: every click delivered to
it costs nats-server and this process CPU per click (a tenth of what a
click cost in all, measured by ``linkflow bench --system``), for nothing
when no browser is open.

Streams are admitted against two caps (SPEC, "Limits"): so many open in
this process, so many per key; past either, a 429 before any is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.contracts import Click, link_key
from shared.http.problems import Problem

_decode = msgspec.json.Decoder(Click).decode
QUEUE_SIZE = 256
KEEPALIVE = 15.0
# How often an open stream asks whether its key is still good: a revoked key
# loses the stream within this (plus the KV watch's milliseconds).
RECHECK = 1.0
# Seconds a refused client is told to wait: streams last minutes, so a
# slot frees when a browser tab closes, not on any schedule.
RETRY_AFTER = 30


class LiveClicks:
    def __init__(self, nc: Client, most: int | None = None, per_key: int | None = None) -> None:
        """``most`` and ``per_key`` are the service's settings (None: no cap)."""
        self._nc = nc
        self._most = most
        self._per_key = per_key
        self._open = 0
        self._by_key: Counter[str] = Counter()
        # (the link's key or None: every link, the domains seen as the table
        # keeps them ('' the default) or None: every domain, the queue)
        self._listeners: set[tuple[str | None, frozenset[str] | None, asyncio.Queue[bytes]]] = set()
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    @property
    def watching(self) -> bool:
        """Subscribed to ``clicks.>``: only while a client is connected."""
        return self._sub is not None

    def admit(self, key: str | None) -> Callable[[], None]:
        """A slot for one stream of ``key`` (None: no key, authentication
        off, bound by the process's cap alone), or a 429 past a cap. The
        caller releases it, once, by calling what this returns."""
        if self._most is not None and self._open >= self._most:
            raise self._refused(f"{self._most} live streams are open on this server")
        if key is not None and self._per_key is not None and self._by_key[key] >= self._per_key:
            raise self._refused(f"this key has {self._per_key} live streams open")
        self._open += 1
        if key is not None:
            self._by_key[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._open -= 1
            if key is not None:
                self._by_key[key] -= 1
                if not self._by_key[key]:
                    del self._by_key[key]

        return release

    @staticmethod
    def _refused(why: str) -> Problem:
        return Problem(
            429, f"{why}: close one and try again", headers={"Retry-After": str(RETRY_AFTER)}
        )

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
        for code, domains, queue in self._listeners:
            if (code is None or code == link_key(click.domain, click.code)) and (
                domains is None or (click.domain or "") in domains
            ):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(msg.data)

    async def events(
        self,
        code: str | None,
        allowed: Callable[[], bool] = lambda: True,
        domains: frozenset[str] | None = None,
    ) -> AsyncIterator[bytes]:
        """Server-Sent Events for one client until it disconnects, or until
        ``allowed`` says its key no longer may (revoked, expired); only the
        clicks of ``code`` (a link's key) and ``domains`` ('' the default),
        where given."""
        listener = (code, domains, asyncio.Queue[bytes](QUEUE_SIZE))
        self._listeners.add(listener)
        try:
            await self._watched()
            yield b": connected\n\n"
            idle = 0.0
            while allowed():
                try:
                    data = await asyncio.wait_for(listener[2].get(), RECHECK)
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
