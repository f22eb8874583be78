"""The analytics consumer on ``CLICKS`` and the ``links.created`` listener."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import msgspec
from nats.aio.msg import Msg

from services.analytics.store import AnalyticsStore
from shared.contracts import Click, LinkCreated
from shared.db import UNAVAILABLE, write_batch
from shared.jetstream.worker import Delivery, Unavailable

log = logging.getLogger(__name__)
_created = msgspec.json.Decoder(LinkCreated).decode


class ClickAggregator:
    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        try:
            return await write_batch(self._store.record, [d.payload for d in batch])
        except UNAVAILABLE as exc:
            raise Unavailable(f"analytics database unavailable: {exc!r}") from exc


class CreatedCounter:
    """Counts ``links.created`` per day. Core NATS, fire-and-forget by design:
    events published while analytics is down are not seen, and the daily
    counts are then short by that many (documented in the README)."""

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
