"""A service's worker loops: started together, stopped together.

Each loop runs until the shared stop event is set, then settles the batch in
hand (ack, nak or dead-letter) and returns; stopping waits for all of them,
so a service drains its NATS connection only after every batch is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Loops:
    def __init__(self, name: str, loops: Sequence[Loop]) -> None:
        self.name = name
        self._loops = list(loops)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(run(self._stop), name=f"{self.name}-loop-{i}")
            for i, run in enumerate(self._loops)
        ]
        log.info("%s: %d worker loop(s)", self.name, len(self._tasks))

    async def stop(self) -> None:
        self._stop.set()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("%s: a worker loop ended with %r", self.name, result)
        self._tasks = []


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def periodic(what: str, every: float, task: Callable[[], Awaitable[object]]) -> Loop:
    """A loop that runs ``task`` now and then every ``every`` seconds until
    stopped. A failure (the database or NATS down) is logged once per streak,
    not once per round, and the next round tries again."""

    async def run(stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                await task()
                if failing:
                    log.info("%s: working again", what)
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("%s failed: %r", what, exc)
                failing = True
            await wait_or_stop(stop, every)

    return run
