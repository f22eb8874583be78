"""Visit limits (SPEC: ``max_visits``): analytics counts them.

Analytics already counts every click once (``counted_clicks``); a human click
of a link with a limit also adds to that link's row in ``link_visits``, in
the same statement (services/analytics/store.py), so the count costs a
click of an unlimited link nothing and no other consumer has to read every
click. Which links have a limit, and their generation (``created_at``), come
from watching KV ``links``. After each batch the counts of its limited links
go to KV ``link_visits``, which every gateway watches and answers 410 from
(services/link/limits.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import msgspec
from nats.js.kv import KeyValue

from services.analytics.store import AnalyticsStore
from shared.contracts import INVALID, LinkEntry, VisitCount, encode
from shared.jetstream.kvwatch import Followed
from shared.jetstream.linkcache import put_if
from shared.jetstream.loops import Loop, periodic

log = logging.getLogger(__name__)

_entry = msgspec.json.Decoder(LinkEntry).decode
_count = msgspec.json.Decoder(VisitCount).decode
# A generation for an entry written before links carried created_at: its
# count then starts with the first click seen, and stays with it.
_UNKNOWN = datetime.fromtimestamp(0).astimezone()


class VisitLimits(Followed):
    def __init__(self, links: KeyValue, counts: KeyValue, store: AnalyticsStore) -> None:
        self._limited: dict[str, datetime] = {}
        self._counts = counts
        self._store = store
        super().__init__(links, "kv-watch-limits")

    def limited(self, codes: Iterable[str]) -> dict[str, datetime]:
        """Which of ``codes`` have a visit limit now, and their generation."""
        return {c: self._limited[c] for c in codes if c in self._limited}

    async def publish(self, codes: Iterable[str]) -> None:
        """Put the counts of ``codes`` into KV. Called after the batch that
        counted them is committed, before it is acked: a batch redelivered
        after a failed put counts nothing again but puts again."""
        for code, count in (await self._store.visits(list(codes))).items():
            await self._put_count(code, count)

    async def repair(self) -> int:
        """Put every limited link's count whose KV entry is missing or
        behind: an exhausted link gets no more clicks to count, so a lost
        entry would otherwise leave it open."""
        repaired = 0
        for code, want in (await self._store.visits(list(self._limited))).items():
            live = self._limited.get(code) in (want.since, _UNKNOWN)
            if live and await self._put_count(code, want):
                repaired += 1
        return repaired

    async def _put_count(self, code: str, count: VisitCount) -> bool:
        """Put ``count`` unless KV holds as much or a later generation's:
        replicas commit and put in any order, and a count never goes back
        (a gateway that starts reads whatever is last)."""

        def supersedes(held: bytes | None) -> bool:
            try:
                old = _count(held) if held else None
            except INVALID:
                return True
            return old is None or (old.since, old.visits) < (count.since, count.visits)

        return await put_if(self._counts, code, encode(count), supersedes)

    def repairer(self, every: float) -> Loop:
        async def once() -> None:
            repaired = await self.repair()
            if repaired:
                log.warning("visit counts: put %d missing or stale KV entries", repaired)

        return periodic("repairing visit counts", every, once)

    def _put(self, code: str, value: bytes) -> None:
        try:
            entry = _entry(value)
        except INVALID:
            return  # the gateway and the cache-refresher log a bad entry
        if entry.max_visits is None or entry.deleted:
            self._limited.pop(code, None)
        else:
            self._limited[code] = entry.created_at or _UNKNOWN

    def _delete(self, code: str) -> None:
        self._limited.pop(code, None)
