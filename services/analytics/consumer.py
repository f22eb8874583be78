"""The analytics consumer on ``CLICKS`` and the ``links.created`` listener."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import msgspec
from nats.aio.msg import Msg

from services.analytics.limits import VisitLimits
from services.analytics.store import AnalyticsStore
from shared.contracts import Click, LinkCreated, link_key
from shared.db import UNAVAILABLE, write_batch
from shared.jetstream.worker import NATS_UNAVAILABLE, Delivery, Unavailable

log = logging.getLogger(__name__)
_created = msgspec.json.Decoder(LinkCreated).decode


class ClickAggregator:
    def __init__(self, store: AnalyticsStore, limits: VisitLimits) -> None:
        self._store = store
        self._limits = limits

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        if not self._limits.synced.is_set():
            # Counting before the limited links are known would miss visits.
            raise Unavailable("links with visit limits not loaded yet")
        clicks = [d.payload for d in batch]
        limited = self._limits.limited({link_key(c.domain, c.code) for c in clicks if not c.is_bot})

        async def record(rows: Sequence[Click]) -> None:
            await self._store.record(rows, limited)

        try:
            refused = await write_batch(record, clicks)
            if limited:
                await self._limits.publish(limited)
        except UNAVAILABLE as exc:
            raise Unavailable(f"analytics database unavailable: {exc!r}") from exc
        except NATS_UNAVAILABLE as exc:
            raise Unavailable(f"KV link_visits unavailable: {exc!r}") from exc
        return refused


class CreatedCounter:
    """Counts ``links.created`` per day. Core NATS, fire-and-forget by design:
    events published while analytics is down are not seen, and the daily
    counts are then short by that many (docs/api/index.md, "Stats")."""

    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store

    async def on_message(self, msg: Msg) -> None:
        try:
            event = _created(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring malformed links.created: %s", exc)
            return
        try:
            await self._store.link_created(event.created_at.date())
        except Exception as exc:
            log.warning("links.created for %s not counted: %r", event.code, exc)
