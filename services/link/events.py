"""What the gateway tells the rest of linkflow after a link changes in the database."""

from __future__ import annotations

import logging
from datetime import datetime

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from services.link.store import Link
from shared.contracts import (
    HDR_ENQUEUED_AT,
    HDR_MSG_ID,
    HDR_REQUEST_ID,
    REQUEST_ID_CUT,
    LinkCreated,
    LinkDeleted,
    LinkUpdated,
    encode,
    link_key,
    now,
    rfc3339,
)
from shared.jetstream import linkcache

log = logging.getLogger(__name__)


def _headers(msg_id: str, request_id: str | None) -> dict[str, str]:
    return {
        HDR_MSG_ID: msg_id,
        # Cut: a caller's id of any length would otherwise fail the publish
        # after the database had committed the change.
        HDR_REQUEST_ID: (request_id or msg_id)[:REQUEST_ID_CUT],
        HDR_ENQUEUED_AT: rfc3339(now()),
    }


class LinkEvents:
    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue) -> None:
        self._nc = nc
        self._js = js
        self._kv = kv

    async def created(self, link: Link, request_id: str | None) -> None:
        # KV first, so that a redirect on any gateway finds the link as soon as
        # the API has answered; links.created is fan-out for analytics only.
        await linkcache.put_if_newer(self._kv, link.key, link.entry())
        event = LinkCreated(
            code=link.code,
            domain=link.domain,
            url=link.url,
            created_at=link.created_at,
            tags=link.tags,
        )
        await self._nc.publish(
            "links.created",
            encode(event),
            headers=_headers(f"{link.key}.{link.version}", request_id),
        )

    async def updated(self, link: Link, request_id: str | None) -> None:
        event = LinkUpdated(
            code=link.code,
            domain=link.domain,
            url=link.url,
            redirect_type=link.redirect_type,
            expires_at=link.expires_at,
            tags=link.tags,
            version=link.version,
            updated_at=link.updated_at,
            max_visits=link.max_visits,
            forward_query=link.forward_query,
            rules=link.rules,
            created_at=link.created_at,
            destinations=link.destinations,
            preview=link.preview,
            password_protected=link.password_hash is not None,
        )
        # Applied to KV by the cache-refresher; every gateway sees it through its watch.
        await self._js.publish(
            "links.updated",
            encode(event),
            stream="LINKS",
            headers=_headers(f"{link.key}.{link.version}", request_id),
        )

    async def deleted(
        self, domain: str | None, code: str, version: int, at: datetime, request_id: str | None
    ) -> None:
        event = LinkDeleted(code=code, domain=domain, version=version, deleted_at=at)
        await self._js.publish(
            "links.deleted",
            encode(event),
            stream="LINKS",
            headers=_headers(f"{link_key(domain, code)}.{version}", request_id),
        )
