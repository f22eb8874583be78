"""Answers ``linkflow.cache-refresher.refresh``: one link's KV entry written
from its database row. This is how a ``links.*`` dead letter is replayed
(analytics asks, then deletes the letter): the row is the truth the event
was about, and nobody but the gateway publishes ``links.*``."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.cache_refresher.reconcile import LINK_ROWS, entry_of
from shared import roster
from shared.contracts import (
    HDR_ERROR,
    INVALID,
    LINK_REFRESH,
    LINK_REFRESHED,
    LinkRefresh,
    LinkRefreshed,
    encode,
    link_key,
)
from shared.jetstream import linkcache
from shared.jetstream.loops import Loop

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(LinkRefresh).decode


async def refresh(kv: KeyValue, pool: asyncpg.Pool, domain: str | None, code: str) -> LinkRefreshed:
    """Write the link's row to KV unless KV holds that version or a newer
    one (as the applier does: never backward; a deleted link becomes its
    tombstone). No row: nothing is written (the reconciliation removes a KV
    entry that has no link)."""
    row = await pool.fetchrow(f"{LINK_ROWS} WHERE domain = $1 AND code = $2", domain or "", code)
    if row is None:
        return LinkRefreshed(code=code, domain=domain, version=None)
    key = link_key(domain, code)
    await linkcache.put_if_newer(kv, key, entry_of(row))
    held, _ = await linkcache.read(kv, key)
    return LinkRefreshed(code=code, domain=domain, version=held.version if held else None)


def responder(nc: Client, kv: KeyValue, pool: asyncpg.Pool) -> Loop:
    """Serve refresh requests until stopped; the replicas form one queue
    group, so each request is answered once."""

    async def on_request(msg: Msg) -> None:
        # Answers go only under LINK_REFRESHED, the one reply subject this
        # identity may publish to: any other would be refused anyway.
        if not msg.reply.startswith(f"{LINK_REFRESHED}."):
            log.warning("refresh request with reply subject %r ignored", msg.reply)
            return
        try:
            asked = _decode(msg.data)
            answer = await refresh(kv, pool, asked.domain, asked.code)
        except INVALID as exc:
            await nc.publish(msg.reply, b"", headers={HDR_ERROR: f"malformed request: {exc}"})
            return
        except Exception as exc:  # the database or KV down: the letter stays in the DLQ
            log.warning("could not refresh a link: %r", exc)
            await nc.publish(msg.reply, b"", headers={HDR_ERROR: f"{type(exc).__name__}: {exc}"})
            return
        await nc.publish(msg.reply, encode(answer))

    async def run(stop: asyncio.Event) -> None:
        sub = await nc.subscribe(LINK_REFRESH, queue=roster.CACHE_REFRESHER.label, cb=on_request)
        try:
            await stop.wait()
        finally:
            await sub.unsubscribe()

    return run
