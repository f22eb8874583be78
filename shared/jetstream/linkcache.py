"""Writes to the KV buckets ``links`` and ``link_visits``, guarded.

Events can arrive twice or out of order, and several replicas write; a
write lands only if it is newer than what the bucket holds (a link's
version, a visit count's generation and size), checked and written with
the entry's revision (compare-and-set) so two writers racing cannot put an
older value last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contracts import INVALID, LinkEntry, encode

_decode = msgspec.json.Decoder(LinkEntry).decode
ATTEMPTS: Final = 5


async def read(kv: KeyValue, code: str) -> tuple[LinkEntry | None, int]:
    """The entry held for ``code`` (None if absent or unreadable) and its revision (0 if none)."""
    try:
        held = await kv.get(code)
    except KeyNotFoundError:
        return None, 0
    try:
        return _decode(held.value or b""), held.revision or 0
    except INVALID:
        return None, held.revision or 0


async def put_if_newer(kv: KeyValue, code: str, entry: LinkEntry) -> bool:
    """Store ``entry`` unless the bucket already holds this version or a newer one."""

    def supersedes(held: bytes | None) -> bool:
        try:
            return held is None or _decode(held).version < entry.version
        except INVALID:
            return True

    return await put_if(kv, code, encode(entry), supersedes)


async def put_if(
    kv: KeyValue, key: str, value: bytes, supersedes: Callable[[bytes | None], bool]
) -> bool:
    """Store ``value`` under ``key`` if ``supersedes(what the bucket holds)``
    (None: nothing), compare-and-set on the revision read, so that of two
    writers racing the newer value is the one left."""
    for _ in range(ATTEMPTS):
        try:
            held = await kv.get(key)
        except KeyNotFoundError:
            value_held, revision = None, 0
        else:
            value_held, revision = held.value or b"", held.revision or 0
        if not supersedes(value_held):
            return False
        try:
            if revision:
                await kv.update(key, value, last=revision)
            else:
                await kv.create(key, value)
            return True
        except (KeyWrongLastSequenceError, APIError):
            continue  # another writer got there first: read again and decide
    raise RuntimeError(f"KV {key}: could not write after {ATTEMPTS} conflicting attempts")
