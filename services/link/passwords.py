"""Link passwords (SPEC: password): Argon2id hashes, checked off the event
loop with bounded concurrency, and the wrong tries each client has left.

Argon2id with argon2-cffi's defaults (RFC 9106's second recommended profile:
64 MiB, 3 passes, 4 lanes) costs 64 MiB and about 0.17 s of one CPU a check
(measured on the 2-core machine linkflow is developed on). So at most
``CHECKING`` run at once in a process, in threads, and at most ``WAITING``
more wait for a turn; past that a POST is refused at once (503): a storm of
wrong passwords costs a bounded amount of memory and CPU, and redirects on
the event loop never wait for it."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from time import monotonic
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

CHECKING: Final = 2
WAITING: Final = 16
# SPEC: more than 5 wrong tries a minute for one link from one address: 429.
TRIES: Final = 5
WINDOW: Final = 60.0
# (link, address) pairs remembered; the least recently tried go first.
REMEMBERED: Final = 10_000


class Busy(Exception):
    """Too many checks running and waiting in this process."""


class Passwords:
    def __init__(self, checking: int = CHECKING, waiting: int = WAITING) -> None:
        self._hasher = PasswordHasher()
        self._turns = asyncio.Semaphore(checking)
        self._most = checking + waiting
        self._queued = 0

    async def hash(self, password: str) -> str:
        """For the API (an authenticated caller): waits its turn, never refused."""
        async with self._turns:
            digest: str = await asyncio.to_thread(self._hasher.hash, password)
        return digest

    async def verify(self, digest: str, password: str) -> bool:
        """Whether ``password`` is the one ``digest`` was made of; raises
        :class:`Busy` rather than queue past the bound."""
        if self._queued >= self._most:
            raise Busy
        self._queued += 1
        try:
            async with self._turns:
                return await asyncio.to_thread(self._check, digest, password)
        finally:
            self._queued -= 1

    def _check(self, digest: str, password: str) -> bool:
        try:
            return self._hasher.verify(digest, password)
        except VerificationError:
            return False
        except InvalidHashError:
            # Not the hash itself in the log: it is a secret too.
            log.error("a link's password hash is not an Argon2 hash; no password opens it")
            return False


class Tries:
    """Wrong tries per (link, client address) in the last minute, in a
    bounded map. A check in flight counts as a try until it is known right,
    so concurrent guesses cannot pass the limit together."""

    def __init__(self, most: int = TRIES, window: float = WINDOW, size: int = REMEMBERED) -> None:
        self._most = most
        self._window = window
        self._size = size
        self._tries: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def take(self, key: str, address: str) -> float:
        """Count a try: 0.0 if allowed, else the seconds until one is."""
        now = monotonic()
        held = self._tries.get((key, address))
        if held is None:
            held = self._tries[(key, address)] = deque()
            if len(self._tries) > self._size:
                self._tries.popitem(last=False)
        else:
            self._tries.move_to_end((key, address))
        while held and held[0] <= now - self._window:
            held.popleft()
        if len(held) >= self._most:
            return held[0] + self._window - now
        held.append(now)
        return 0.0

    def right(self, key: str, address: str) -> None:
        """The try was the right password: it does not count."""
        held = self._tries.get((key, address))
        if held:
            held.pop()
