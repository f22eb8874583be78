"""Applying ``links.updated`` / ``links.deleted`` to KV, newest version wins.

LINKS also keeps ``links.created`` (for durable consumers such as the
webhooks service); the gateway wrote a new link's KV entry before it
published that, so here it is acked with nothing to apply.

An update of a password-protected link says only that it is protected: its
entry is written from the link's row instead, which holds the password's
hash (no event may carry it). The row is the truth and at least as new as
the event, so this never writes an older version; without the database the
event is retried, never applied without its hash (which would open the link)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.cache_refresher.reconcile import LINK_ROWS, entry_of
from shared.contracts import LinkDeleted, LinkEntry, LinkUpdated, link_key
from shared.errors import PermanentError
from shared.jetstream import linkcache
from shared.jetstream.worker import NATS_UNAVAILABLE, Delivery, Unavailable

LinkEvent = LinkUpdated | LinkDeleted | None
_updated = msgspec.json.Decoder(LinkUpdated).decode
_deleted = msgspec.json.Decoder(LinkDeleted).decode


def decode(msg: Msg) -> LinkEvent:
    if msg.subject == "links.updated":
        return _updated(msg.data)
    if msg.subject == "links.deleted":
        return _deleted(msg.data)
    if msg.subject == "links.created":
        return None
    raise PermanentError(f"no contract for subject {msg.subject!r}")


def entry_for(event: LinkUpdated | LinkDeleted) -> LinkEntry:
    if isinstance(event, LinkDeleted):
        # A tombstone keeps the version, so a late, older update stays stale.
        return LinkEntry(url="", version=event.version, deleted=True)
    return LinkEntry(
        url=event.url,
        redirect_type=event.redirect_type,
        expires_at=event.expires_at,
        version=event.version,
        max_visits=event.max_visits,
        forward_query=event.forward_query,
        rules=event.rules,
        created_at=event.created_at,
        destinations=event.destinations,
        preview=event.preview,
    )


class Applier:
    def __init__(self, kv: KeyValue, pool: asyncpg.Pool) -> None:
        self._kv = kv
        self._pool = pool

    async def _entry(self, event: LinkUpdated | LinkDeleted) -> LinkEntry | None:
        """What KV should hold after ``event``; None: nothing to write (a
        protected link whose row is gone, which reconciliation removes)."""
        if isinstance(event, LinkUpdated) and event.password_protected:
            row = await self._pool.fetchrow(
                f"{LINK_ROWS} WHERE domain = $1 AND code = $2", event.domain or "", event.code
            )
            return None if row is None else entry_of(row)
        return entry_for(event)

    async def handle(self, batch: Sequence[Delivery[LinkEvent]]) -> Mapping[int, Exception]:
        failures: dict[int, Exception] = {}
        for i, delivery in enumerate(batch):
            event = delivery.payload
            if event is None:
                continue
            try:
                key = link_key(event.domain, event.code)
                entry = await self._entry(event)
                if entry is not None:
                    await linkcache.put_if_newer(self._kv, key, entry)
            except NATS_UNAVAILABLE as exc:
                raise Unavailable(f"KV unavailable: {exc!r}") from exc
            except Exception as exc:  # retried with backoff, then dead-lettered
                failures[i] = exc
        return failures
