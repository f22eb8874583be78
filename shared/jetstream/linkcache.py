"""Writes to the KV bucket ``links``, guarded by version.

Events can arrive twice or out of order; a write lands only if it is newer
than what the bucket holds, checked and written with the entry's revision
(compare-and-set) so two writers racing cannot put an older version last.
"""

from __future__ import annotations

import msgspec
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contracts import INVALID, LinkEntry, encode

_decode = msgspec.json.Decoder(LinkEntry).decode


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


async def put_if_newer(kv: KeyValue, code: str, entry: LinkEntry, attempts: int = 5) -> bool:
    """Store ``entry`` unless the bucket already holds this version or a newer one."""
    payload = encode(entry)
    for _ in range(attempts):
        held, revision = await read(kv, code)
        if held is not None and held.version >= entry.version:
            return False
        try:
            if revision:
                await kv.update(code, payload, last=revision)
            else:
                await kv.create(code, payload)
            return True
        except (KeyWrongLastSequenceError, APIError):
            continue  # another writer got there first: read again and decide
    raise RuntimeError(
        f"KV {code}: could not write version {entry.version} after {attempts} conflicting attempts"
    )
