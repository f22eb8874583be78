"""Compares PostgreSQL (the truth) with KV ``links`` and repairs drift."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Final

import asyncpg
import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contracts import (
    INVALID,
    LinkEntry,
    decode_destinations,
    decode_preview,
    decode_rules,
    encode,
    link_key,
    millis,
)
from shared.jetstream import linkcache
from shared.jetstream.loops import Loop, periodic
from shared.metrics import CACHE_REPAIRS

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(LinkEntry).decode


async def snapshot(kv: KeyValue) -> dict[str, tuple[LinkEntry | None, int]]:
    """Every key's entry (None if unreadable) and revision, as of now."""
    out: dict[str, tuple[LinkEntry | None, int]] = {}
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        async for kv_entry in watcher:
            if kv_entry is None:
                break
            try:
                entry: LinkEntry | None = _decode(kv_entry.value or b"")
            except INVALID:
                entry = None
            out[kv_entry.key] = (entry, kv_entry.revision or 0)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return out


# A link's row as KV holds it (the applier's entry_for, from the database).
LINK_ROWS: Final = (
    "SELECT domain, code, url, redirect_type, expires_at, max_visits, forward_query, rules, "
    "destinations, preview, password_hash, version, created_at, "
    "deleted_at IS NOT NULL AS deleted FROM links"
)


def entry_of(row: asyncpg.Record) -> LinkEntry:
    """A row of LINK_ROWS as its KV entry; a deleted link is a tombstone."""
    if row["deleted"]:
        return LinkEntry(url="", version=row["version"], deleted=True)
    return LinkEntry(
        url=row["url"],
        redirect_type=row["redirect_type"],
        expires_at=row["expires_at"],
        version=row["version"],
        max_visits=row["max_visits"],
        forward_query=row["forward_query"],
        rules=decode_rules(row["rules"]),
        created_at=millis(row["created_at"]),
        destinations=decode_destinations(row["destinations"]),
        preview=decode_preview(row["preview"]),
        password_hash=row["password_hash"],
    )


async def truth(pool: asyncpg.Pool) -> dict[str, LinkEntry]:
    """Every link's entry by its KV key."""
    return {
        link_key(r["domain"] or None, r["code"]): entry_of(r) for r in await pool.fetch(LINK_ROWS)
    }


def _kind(held: LinkEntry | None, want: LinkEntry) -> str | None:
    if held == want:
        return None
    if held is None:
        return "corrupt"
    if (
        held.created_at is None
        and msgspec.structs.replace(held, created_at=want.created_at) == want
    ):
        return "upgraded"  # written before entries carried created_at
    if held.version < want.version:
        return "stale"
    return "corrupt"  # same or newer version than the database, but different


async def reconcile(kv: KeyValue, pool: asyncpg.Pool) -> dict[str, int]:
    """One pass; returns repairs by kind. KV is read before the database, so a
    change that lands in between looks stale (and is repaired to the newer
    row) rather than newer-than-truth; every write is compare-and-set on the
    revision we read, so a concurrent event is never overwritten."""
    held = await snapshot(kv)
    want = await truth(pool)
    repairs: dict[str, int] = {}

    async def repair(kind: str, write: Awaitable[object]) -> None:
        try:
            await write
        except KeyWrongLastSequenceError:
            return  # changed since the snapshot: the next pass will look again
        repairs[kind] = repairs.get(kind, 0) + 1
        CACHE_REPAIRS.labels(kind).inc()

    for code, entry in want.items():
        current = held.get(code)
        if current is None:
            if not entry.deleted:
                await repair("missing", linkcache.put_if_newer(kv, code, entry))
            continue
        kind = _kind(current[0], entry)
        if kind:
            # An upgrade rewrites every entry once: not worth a warning each.
            log.log(
                logging.DEBUG if kind == "upgraded" else logging.WARNING,
                "KV %s is %s (%s); repairing to version %d",
                code,
                kind,
                current[0],
                entry.version,
            )
            await repair(kind, kv.update(code, encode(entry), last=current[1]))
    for code, (_, revision) in held.items():
        if code not in want:
            log.warning("KV %s has no link in the database; removing it", code)
            await repair("orphaned", kv.delete(code, last=revision))
    return repairs


def reconciler(kv: KeyValue, pool: asyncpg.Pool, every: float) -> Loop:
    """Reconciliation every ``every`` seconds; the database or NATS down
    waits for the next round."""

    async def once() -> None:
        repairs = await reconcile(kv, pool)
        if repairs:
            log.warning("reconciliation repaired %s", repairs)

    return periodic("reconciliation", every, once)
