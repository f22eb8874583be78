"""API keys: what one is, how it is minted and hashed, and where it is kept.

A key lives in the KV bucket ``api_keys`` (key: its name) as an
:class:`ApiKey` holding only the SHA-256 of the secret: a key is 190 random
bits, so a fast hash cannot be reversed by guessing (GitHub and Stripe store
tokens the same way), and checking one costs a microsecond. Every HTTP
service watches the bucket (:class:`KeyRing`), so a new key or a revocation
reaches all of them within milliseconds, with no service calling another or
reading a table it does not own. When a key was last used goes to a second
bucket, ``api_key_usage``, which services may write and the key bucket they
may only read (``deploy/nats.conf``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import string
import time
from datetime import datetime
from typing import Annotated, Final

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from shared.contracts import INVALID, DomainHost, Timestamp, now, rfc3339
from shared.jetstream.kvwatch import Followed
from shared.jetstream.topology import KV_KEYS, KV_USAGE
from shared.urls import host_name

log = logging.getLogger(__name__)


LINKS_READ: Final = "links:read"
LINKS_WRITE: Final = "links:write"
STATS_READ: Final = "stats:read"
OPS: Final = "ops"
# The webhooks service's API (a TypeScript service: it reads these records
# from their published schema, shared/schemas/ApiKey.json).
WEBHOOKS: Final = "webhooks"
ADMIN: Final = "admin"
SCOPES: Final = (LINKS_READ, LINKS_WRITE, STATS_READ, OPS, WEBHOOKS, ADMIN)
# Not a scope: what a policy returns for a call any valid key may make (the
# web app asking what its key may do).
ANY_KEY: Final = "any key"
# A scope and what it includes besides itself (SPEC, "Access").
_IMPLIES: Final = {LINKS_WRITE: frozenset({LINKS_READ}), ADMIN: frozenset(SCOPES)}

NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ALPHABET: Final = string.ascii_letters + string.digits
_SECRET_CHARS: Final = 32  # 32 of 62 symbols: 190 bits
PREFIX: Final = "lf_"
_SHOWN: Final = len(PREFIX) + 6  # what `keys list` shows of a key
# Last use is written at most this often per key and process.
USAGE_EVERY: Final = 60.0


class ApiKey(msgspec.Struct, kw_only=True, frozen=True):
    """Value of KV ``api_keys`` (its key: the name): a key's name, scopes and
    lifetime, never the key. A service checks a bearer key by the SHA-256 of
    its UTF-8 bytes, and refuses it when revoked or expired."""

    name: Annotated[str, msgspec.Meta(pattern=NAME_RE.pattern)]
    prefix: Annotated[str, msgspec.Meta(description="the key's first characters, shown in lists")]
    sha256: Annotated[
        str,
        msgspec.Meta(
            pattern="^[0-9a-f]{64}$",
            description="lowercase hex SHA-256 of the whole key string's UTF-8 bytes",
        ),
    ]
    scopes: Annotated[
        tuple[str, ...],
        msgspec.Meta(
            description="what the key may do: links:read, links:write (includes links:read), "
            "stats:read, ops, webhooks, admin (includes every scope)"
        ),
    ]
    created_at: Timestamp
    expires_at: Annotated[
        Timestamp | None, msgspec.Meta(description="refused from this time on; null: never")
    ] = None
    revoked_at: Annotated[
        Timestamp | None, msgspec.Meta(description="refused from this time on; null: not revoked")
    ] = None
    domains: Annotated[
        tuple[DomainHost, ...],
        msgspec.Meta(
            description="the only short domains (hosts) whose links and stats the key sees; "
            "empty: every domain"
        ),
    ] = ()

    def allows(self, scope: str) -> bool:
        return any(s == scope or scope in _IMPLIES.get(s, ()) for s in self.scopes)

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= at


_decode = msgspec.json.Decoder(ApiKey).decode


def mint() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(
    name: str,
    scopes: tuple[str, ...],
    expires_at: datetime | None,
    domains: tuple[str, ...] = (),
) -> tuple[str, ApiKey]:
    """A fresh secret and the record that may be stored for it."""
    if not NAME_RE.match(name):
        raise ValueError(f"a key name is 1-64 of A-Z a-z 0-9 _ -, not {name!r}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r} (one of {', '.join(SCOPES)})")
    try:
        hosts = tuple(dict.fromkeys(host_name(d) for d in domains))
    except ValueError as exc:
        raise ValueError(f"a domain {exc}") from None
    key = mint()
    record = ApiKey(
        name=name,
        prefix=key[:_SHOWN],
        sha256=digest(key),
        scopes=tuple(dict.fromkeys(scopes)),
        created_at=now(),
        expires_at=expires_at,
        domains=hosts,
    )
    return key, record


def encode(record: ApiKey) -> bytes:
    out = msgspec.structs.asdict(record)
    for field in ("created_at", "expires_at", "revoked_at"):
        if out[field] is not None:
            out[field] = rfc3339(out[field])
    return msgspec.json.encode(out)


def decode(value: bytes) -> ApiKey:
    return _decode(value)


async def buckets(js: JetStreamContext) -> tuple[KeyValue, KeyValue]:
    return await js.key_value(KV_KEYS), await js.key_value(KV_USAGE)


class Verdict(msgspec.Struct, frozen=True):
    """What a presented key turned out to be: ``key`` when it is live."""

    key: ApiKey | None
    why: str = ""


class KeyRing(Followed):
    """Every key of the bucket by hash, kept current by a watch."""

    def __init__(self, keys: KeyValue, usage: KeyValue) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        self._by_name: dict[str, ApiKey] = {}
        self._usage = usage
        self._used: dict[str, float] = {}  # name -> when its use was last written
        super().__init__(keys, "kv-watch-api-keys")
        self._writes: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._writes):
            task.cancel()

    def _put(self, name: str, value: bytes) -> None:
        try:
            record = _decode(value)
        except INVALID as exc:
            log.error("KV %s entry %s is not a key (%s); ignored", KV_KEYS, name, exc)
            return
        self._delete(name)
        self._by_name[name] = record
        self._by_hash[record.sha256] = record

    def _delete(self, name: str) -> None:
        old = self._by_name.pop(name, None)
        if old is not None:
            self._by_hash.pop(old.sha256, None)

    def check(self, presented: str) -> Verdict:
        record = self._by_hash.get(digest(presented))
        if record is None:
            return Verdict(None, "unknown API key")
        if record.revoked_at is not None:
            return Verdict(None, f"API key {record.name!r} was revoked")
        if record.expires_at is not None and record.expired(now()):
            return Verdict(None, f"API key {record.name!r} has expired")
        self._note_use(record.name)
        return Verdict(record)

    def record(self, name: str) -> ApiKey | None:
        return self._by_name.get(name)

    def allows(self, name: str, scope: str) -> bool:
        """Whether the key named ``name`` is live and grants ``scope``."""
        record = self._by_name.get(name)
        return (
            record is not None
            and record.revoked_at is None
            and not record.expired(now())
            and record.allows(scope)
        )

    def _note_use(self, name: str) -> None:
        at = time.monotonic()
        if at - self._used.get(name, -USAGE_EVERY) < USAGE_EVERY:
            return
        self._used[name] = at
        task = asyncio.create_task(self._write_use(name))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_use(self, name: str) -> None:
        try:
            await self._usage.put(name, rfc3339(now()).encode())
        except Exception as exc:  # last use is informative; never fail a call for it
            log.warning("could not note the use of key %s: %s", name, exc)


class KeyExists(Exception):
    """``keys create`` with the name of a live key."""


class NoSuchKey(Exception):
    """``keys revoke`` of a name that has no key."""


async def _held(bucket: KeyValue, name: str) -> KeyValue.Entry | None:
    try:
        return await bucket.get(name)
    except KeyNotFoundError:  # KeyDeletedError included
        return None


async def create(
    js: JetStreamContext,
    name: str,
    scopes: tuple[str, ...],
    expires_at: datetime | None = None,
    domains: tuple[str, ...] = (),
) -> str:
    """Store a new key and return it: the only time it exists outside the caller."""
    key, record = new_key(name, scopes, expires_at, domains)
    bucket, _ = await buckets(js)
    held = await _held(bucket, name)
    if held is None or held.value is None:
        try:
            await bucket.create(name, encode(record))
        except KeyWrongLastSequenceError:  # created meanwhile by another call
            raise KeyExists(f"a key named {name!r} exists; revoke it first") from None
    elif decode(held.value).revoked_at is None:
        raise KeyExists(f"a key named {name!r} exists; revoke it first")
    else:  # a revoked key's name may be used again
        try:
            await bucket.update(name, encode(record), last=held.revision)
        except KeyWrongLastSequenceError:  # changed meanwhile by another call
            raise KeyExists(f"the key named {name!r} changed meanwhile; try again") from None
    return key


async def revoke(js: JetStreamContext, name: str) -> ApiKey:
    bucket, _ = await buckets(js)
    held = await _held(bucket, name)
    if held is None or held.value is None:
        raise NoSuchKey(f"no key named {name!r}")
    record = decode(held.value)
    if record.revoked_at is None:
        record = msgspec.structs.replace(record, revoked_at=now())
        await bucket.update(name, encode(record), last=held.revision)
    return record


async def list_(js: JetStreamContext) -> list[tuple[ApiKey, datetime | None]]:
    """Every key, oldest first, with when it was last used."""
    bucket, usage = await buckets(js)
    found: list[tuple[ApiKey, datetime | None]] = []
    try:
        names = await bucket.keys()
    except NoKeysError:
        return []
    for name in names:
        entry = await bucket.get(name)
        if not entry.value:
            continue
        try:
            used = await usage.get(name)
            last = datetime.fromisoformat(used.value.decode()) if used.value else None
        except KeyNotFoundError:
            last = None
        found.append((decode(entry.value), last))
    return sorted(found, key=lambda pair: pair[0].created_at)
