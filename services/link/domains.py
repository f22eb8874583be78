"""Short domains: which hosts a gateway answers for, and what a visit that
finds no link on one of them gets.

The default domain is the host of ``LINKFLOW_PUBLIC_URL``; others are added
with ``POST /api/domains``. A domain's record lives in the KV bucket
``domains`` (key: its host), written by the gateway that took the call and
followed by every gateway (:class:`Domains`), so a redirect learns its
domain from the request's ``Host`` with no I/O. KV rather than a table: a
record is read only by gateways, and the bucket's per-key revision gives
create-if-absent and compare-and-set, so two gateways changing one domain at
once cannot lose a change. The default domain has a record only once its
redirects are set (``PATCH /api/domains/{its host}``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared import metrics
from shared.contracts import INVALID
from shared.jetstream.kvwatch import Followed
from shared.urls import host_name

log = logging.getLogger(__name__)

# Every gateway holds every domain in memory: an admin's call adds one, and
# this bounds what a mistaken script can make every gateway hold.
MAX_DOMAINS: Final = 1000


class Domain(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A domain's record in KV ``domains``: what only gateways read."""

    host: str
    base_url_redirect: str | None = None
    not_found_redirect: str | None = None
    created_at: datetime
    updated_at: datetime


_decode = msgspec.json.Decoder(Domain).decode
encode = msgspec.json.Encoder().encode


def short_url(public_url: str, domain: str | None, code: str) -> str:
    """A link's public URL: under ``LINKFLOW_PUBLIC_URL`` on the default
    domain, at its domain's host with the public URL's scheme on another."""
    if domain is None:
        return f"{public_url.rstrip('/')}/{code}"
    return f"{urlsplit(public_url).scheme}://{domain}/{code}"


def request_host(value: bytes) -> str:
    """A ``Host`` header's host: lower case, port and trailing dot dropped
    (``Go.Example.com:8080`` is ``go.example.com``; ``[::1]:80`` is ``::1``)."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.partition(":")[0].rstrip(".")


def points_at(url: str, host: str) -> bool:
    """Whether ``url`` (an already checked target) is on ``host``: a domain's
    own redirect there would send its visitors round in a loop."""
    try:
        return host_name(urlsplit(url).hostname or "") == host
    except ValueError:
        return False


class Domains(Followed):
    """The gateway's copy of every domain's record, by host, current within
    milliseconds of a change on any gateway."""

    def __init__(self, kv: KeyValue, default_host: str) -> None:
        self.default_host = default_host
        self._kv = kv
        self._records: dict[str, Domain] = {}
        super().__init__(kv, "kv-watch-domains")

    def get(self, host: str) -> Domain | None:
        """The record of a registered host (the default one's once set)."""
        return self._records.get(host)

    def of(self, host: str) -> str | None:
        """The domain a request for ``host`` is on: None for the default
        domain, which serves every host that is not a domain."""
        return None if host == self.default_host or host not in self._records else host

    def serving(self, host: str) -> Domain | None:
        """The record that answers a request for ``host``: its own, or, for a
        host that is not a registered domain, the default domain's."""
        return self._records.get(host) or self._records.get(self.default_host)

    def all(self) -> list[Domain]:
        return sorted(self._records.values(), key=lambda d: d.host)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def others(self) -> bool:
        """Whether any domain but the default is registered: until one is,
        a redirect need not read its Host."""
        return len(self._records) > (self.default_host in self._records)

    def apply(self, domain: Domain) -> None:
        """A record this gateway just wrote, held before its watch brings it."""
        held = self._records.get(domain.host)
        if held is None or domain.updated_at >= held.updated_at:
            self._records[domain.host] = domain
        metrics.DOMAINS.set(len(self._records))

    def forget(self, host: str) -> None:
        self._records.pop(host, None)
        metrics.DOMAINS.set(len(self._records))

    async def create(self, domain: Domain) -> bool:
        """Adds ``domain``; False if its host has a record already."""
        try:
            await self._kv.create(domain.host, encode(domain))
        except KeyWrongLastSequenceError:
            return False
        self.apply(domain)
        return True

    async def change(
        self, host: str, change: Callable[[Domain | None], Domain | None]
    ) -> Domain | None:
        """The record of ``host`` replaced by ``change(current)`` (None: left
        alone), compare-and-set on its revision: a change made meanwhile by
        another gateway is read again, never overwritten."""
        while True:
            try:
                entry = await self._kv.get(host)
                current, revision = _decode(entry.value or b""), entry.revision or 0
            except KeyNotFoundError:  # a deleted key's marker included
                current, revision = None, 0
            new = change(current)
            if new is None:
                return None
            try:
                if revision:
                    await self._kv.update(host, encode(new), last=revision)
                else:
                    await self._kv.create(host, encode(new))
            except KeyWrongLastSequenceError:
                continue
            self.apply(new)
            return new

    async def remove(self, host: str) -> bool:
        """Deletes the record of ``host``; False if it had none."""
        while True:
            try:
                entry = await self._kv.get(host)
            except KeyNotFoundError:
                return False
            try:
                await self._kv.delete(host, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            self.forget(host)
            return True

    def _put(self, key: str, value: bytes) -> None:
        try:
            domain = _decode(value)
        except INVALID as exc:
            # Only gateways write the bucket: a record they cannot read is a
            # newer gateway's. Skipped (its host served as the default) and said.
            log.warning("domains: skipping unreadable record %r (%s)", key, exc)
            return
        self._records[key] = domain
        metrics.DOMAINS.set(len(self._records))

    def _delete(self, key: str) -> None:
        self.forget(key)
