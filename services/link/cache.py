"""The gateway's in-process map of links, kept current by watching KV ``links``.

The redirect reads this map and nothing else. While the watch is current, a
code not in the map does no I/O (SPEC, "Limits": a flood of random paths is
not a flood of KV gets and queries): a link created a moment ago on another
gateway is in KV before that gateway answers 201, and this gateway's watch
delivers it within milliseconds, so a miss waits up to
:data:`ARRIVAL_WAIT` for the code to arrive before it answers "unknown".
Only before the map is loaded, or while its watch restarts, does a miss fall
back to a KV get and then the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.link.validation import CODE_RE
from shared import metrics
from shared.contracts import INVALID, LinkEntry, split_link_key
from shared.jetstream.kvwatch import Followed

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(LinkEntry).decode

# (domain, code) -> the link's entry from the database.
Loader = Callable[[str | None, str], Awaitable[LinkEntry | None]]
MISSING_TTL = 1.0
MISSING_MAX = 10_000
# How long a miss waits for its code to arrive by the watch: well above a
# watch's delivery lag (a few ms, more on a busy gateway), short enough that
# an unknown code's 404 is not felt.
ARRIVAL_WAIT: Final = 0.25
# Codes awaited at once; past this a miss is answered at once (a flood of
# random paths holds this many small events at most).
AWAITED_MAX: Final = 10_000


class LinkCache(Followed):
    def __init__(self, kv: KeyValue, load_from_db: Loader) -> None:
        self._kv = kv
        self._load_from_db = load_from_db
        self._entries: dict[str, LinkEntry] = {}
        self._missing: dict[str, float] = {}  # code -> until when it counts as missing
        self._awaited: dict[str, asyncio.Event] = {}  # code -> set when it arrives
        super().__init__(kv, "kv-watch-links")

    def get(self, code: str) -> LinkEntry | None:
        return self._entries.get(code)

    def apply(self, code: str, entry: LinkEntry) -> None:
        """Keep the newer of what we hold and ``entry``: KV updates and
        fallback loads may race, and a version never goes backwards."""
        self._missing.pop(code, None)
        held = self._entries.get(code)
        if held is None or entry.version >= held.version:
            self._entries[code] = entry
            metrics.LINK_CACHE_SIZE.set(len(self._entries))
        arrived = self._awaited.pop(code, None)
        if arrived is not None:
            arrived.set()

    async def lookup(self, code: str) -> LinkEntry | None:
        """A miss in the map (``code``: a link's key, ``<host>/<code>`` on
        another domain than the default): its arrival by the watch while it
        is current, else KV and then the database.

        Codes that cannot exist are refused without waiting or I/O; without
        a current watch, a code found nowhere is remembered as missing for a
        second, so a scan of random paths costs one KV get and one query per
        code and second, not per request."""
        if not CODE_RE.match(split_link_key(code)[1]):
            return None
        if self.current:
            return await self._arrival(code)
        now = time.monotonic()
        if self._missing.get(code, 0.0) > now:
            return None
        entry = await self._fetch(code)
        if entry is None:
            if len(self._missing) >= MISSING_MAX:
                self._missing.clear()
            self._missing[code] = now + MISSING_TTL
        return entry

    async def _arrival(self, code: str) -> LinkEntry | None:
        arrived = self._awaited.get(code)
        if arrived is None:
            if len(self._awaited) >= AWAITED_MAX:
                return None
            arrived = self._awaited[code] = asyncio.Event()
        try:
            await asyncio.wait_for(arrived.wait(), ARRIVAL_WAIT)
        except TimeoutError:
            if self._awaited.get(code) is arrived:
                del self._awaited[code]
        entry = self._entries.get(code)
        metrics.LINK_LOOKUPS.labels("watch" if entry else "unknown").inc()
        return entry

    async def _fetch(self, code: str) -> LinkEntry | None:
        try:
            kv_entry = await self._kv.get(code)
        except KeyNotFoundError:
            kv_entry = None
        except Exception as exc:  # NATS unreachable: the database can still answer
            log.warning("KV get %s failed: %s", code, exc)
            kv_entry = None
        if kv_entry is not None and kv_entry.value:
            try:
                entry: LinkEntry | None = _decode(kv_entry.value)
            except INVALID:
                entry = None
            if entry is not None:
                self.apply(code, entry)
                metrics.LINK_LOOKUPS.labels("kv").inc()
                return entry
        entry = await self._load_from_db(*split_link_key(code))
        if entry is not None:
            self.apply(code, entry)
        metrics.LINK_LOOKUPS.labels("database" if entry else "nowhere").inc()
        return entry

    def _put(self, code: str, value: bytes) -> None:
        try:
            self.apply(code, _decode(value))
        except INVALID as exc:
            log.error("KV entry %s is not a link (%s); ignored", code, exc)

    def _delete(self, code: str) -> None:
        # A plain KV delete carries no version; the cache-refresher writes
        # tombstones instead, so this is an operator's purge.
        self._entries.pop(code, None)
