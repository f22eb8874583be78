"""Following a KV bucket for the life of a service: the one watch loop that
the gateway's link map and every service's API keys use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

# A plain KV delete or purge: the entry is gone, it carries no value.
DELETE_OPS = frozenset({"DEL", "PURGE"})
RESTART_DELAY = 0.5


class KvFollower:
    """Calls ``on_put(key, value)`` / ``on_delete(key)`` for every entry in
    the bucket and then for every change, restarting the watch when it ends
    (NATS outage, stream leader change). ``synced`` is set once the initial
    values are all in."""

    def __init__(
        self,
        kv: KeyValue,
        on_put: Callable[[str, bytes], None],
        on_delete: Callable[[str], None],
        name: str,
    ) -> None:
        self._kv = kv
        self._on_put = on_put
        self._on_delete = on_delete
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        # Whether the copy is current: loaded by the watch running now.
        # False again from the moment a watch ends until its restart loads.
        self.current = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch_forever(), name=self._name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: KV watch ended (%s); restarting", self._name, exc)
            await asyncio.sleep(RESTART_DELAY)

    async def _watch(self) -> None:
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are all in
                    self.synced.set()
                    self.current = True
                elif entry.operation in DELETE_OPS:
                    self._on_delete(entry.key)
                else:
                    self._on_put(entry.key, entry.value or b"")
        finally:
            self.current = False
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


class Followed:
    """A process's copy of a KV bucket, kept current by a :class:`KvFollower`
    (the gateway's link map and visit counts, analytics' limited links, every
    service's API keys): a subclass says what a put and a delete do."""

    def __init__(self, kv: KeyValue, name: str) -> None:
        self._follower = KvFollower(kv, self._put, self._delete, name)
        self.synced = self._follower.synced

    @property
    def current(self) -> bool:
        """Loaded by the watch running now (see :attr:`KvFollower.current`)."""
        return self._follower.current

    def start(self) -> None:
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _put(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError
