"""The gateway's in-process map of links, kept current by watching KV ``links``.

The redirect reads this map and nothing else in the common case; a miss falls
back to a KV get and then to the database (a link created on another gateway
a moment ago, or a KV that lost an entry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.link.validation import CODE_RE
from shared import metrics
from shared.contracts import INVALID, LinkEntry
from shared.jetstream.kvwatch import Followed

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(LinkEntry).decode

Loader = Callable[[str], Awaitable[LinkEntry | None]]
MISSING_TTL = 1.0
MISSING_MAX = 10_000


class LinkCache(Followed):
    def __init__(self, kv: KeyValue, load_from_db: Loader) -> None:
        self._kv = kv
        self._load_from_db = load_from_db
        self._entries: dict[str, LinkEntry] = {}
        self._missing: dict[str, float] = {}  # code -> until when it counts as missing
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

    async def lookup(self, code: str) -> LinkEntry | None:
        """The slow path for a miss in the map: KV, then the database.

        Codes that cannot exist are refused without I/O, and a code found
        nowhere is remembered as missing for a second, so a scan of random
        paths costs one KV get and one query per code and second, not per
        request."""
        if not CODE_RE.match(code):
            return None
        now = time.monotonic()
        if self._missing.get(code, 0.0) > now:
            return None
        entry = await self._fetch(code)
        if entry is None:
            if len(self._missing) >= MISSING_MAX:
                self._missing.clear()
            self._missing[code] = now + MISSING_TTL
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
        entry = await self._load_from_db(code)
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
