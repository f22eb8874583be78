"""Turning a redirect into a click on ``clicks.<code>`` and waiting for its PubAck."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import time
from typing import Final

from nats.js import JetStreamContext

from shared import metrics
from shared.contracts import (
    HDR_ENQUEUED_AT,
    HDR_MSG_ID,
    HDR_REQUEST_ID,
    Click,
    encode,
    now,
    rfc3339,
)

# Crawlers, link-preview fetchers and HTTP libraries (the isbot list's most
# common tokens); their clicks are recorded with is_bot=true.
_BOT_RE: Final = re.compile(
    r"bot|crawl|spider|slurp|preview|facebookexternalhit|embedly|whatsapp|telegram|"
    r"slack|discord|skype|vkshare|pinterest|quora link|bitlybot|outbrain|nuzzel|"
    r"headless|lighthouse|curl|wget|python-|httpx|aiohttp|go-http-client|okhttp|java/|"
    r"libwww|apache-httpclient|axios|node-fetch|monitor|uptime",
    re.IGNORECASE,
)


def is_bot(user_agent: str | None, head: bool) -> bool:
    return head or (user_agent is not None and _BOT_RE.search(user_agent) is not None)


def anonymize(ip: str | None) -> str | None:
    """Zero the last octet of IPv4 and the last 80 bits of IPv6."""
    if not ip:
        return None
    head, dot, _ = ip.rpartition(".")
    if dot and ":" not in ip:
        return f"{head}.0"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return anonymize(str(addr.ipv4_mapped))
    network = ipaddress.ip_network(f"{addr}/48", strict=False)
    return str(network.network_address)


def click_id() -> str:
    """Time-ordered (so the clicks primary key grows at one end) and unique."""
    return f"{time.time_ns():016x}{os.urandom(6).hex()}"


def new_click(code: str, *, referrer: str | None, user_agent: str | None, ip: str | None,
              country: str | None, head: bool, request_id: str | None,
              anonymize_ip: bool) -> Click:
    cid = click_id()
    return Click(id=cid, code=code, ts=now(), referrer=referrer, user_agent=user_agent,
                 ip=anonymize(ip) if anonymize_ip else ip, country=country,
                 is_bot=is_bot(user_agent, head), request_id=request_id or cid)


class ClickPublisher:
    def __init__(self, js: JetStreamContext, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, click: Click) -> None:
        """Return once JetStream has stored the click; raise if it did not in time."""
        started = time.perf_counter()
        headers = {HDR_MSG_ID: click.id, HDR_REQUEST_ID: click.request_id or click.id,
                   HDR_ENQUEUED_AT: rfc3339(click.ts)}
        try:
            async with asyncio.timeout(self._timeout):
                future = await self._js.publish_async(f"clicks.{click.code}", encode(click),
                                                      headers=headers)
                await future
        except BaseException:
            metrics.CLICK_PUBLISH_FAILURES.inc()
            raise
        metrics.CLICK_PUBLISH_SECONDS.observe(time.perf_counter() - started)
