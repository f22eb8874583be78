"""Turning a redirect into a click on ``clicks.<code>`` and waiting for its PubAck."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime
from typing import Final

import msgspec

from services.link.splits import draw
from services.link.visitors import Visitors
from shared import useragent
from shared.contracts import Destination, click_id, link_key, rfc3339

# Referrer and user agent are cut to this length: a click stays small however
# large the visitor's headers are.
MAX_FIELD: Final = 1024


def is_bot(user_agent: str | None, head: bool) -> bool:
    return head or useragent.is_bot_agent(user_agent)


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


class _Clock:
    """The current time as the SPEC's RFC 3339 string, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._second = -1
        self._prefix = ""
        self._text = ""

    def now(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            self._ms = ms
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = rfc3339(datetime.fromtimestamp(second, UTC))[:-4]
            self._text = f"{self._prefix}{milli:03d}Z"
        return self._text


_clock = _Clock()
_encode = msgspec.json.Encoder().encode


class OutgoingClick(msgspec.Struct, frozen=True, gc=False):
    """A click as the gateway sends it: the ``Click`` contract with ``ts``
    already formatted (a test keeps the two field lists identical)."""

    id: str
    code: str
    domain: str | None
    ts: str
    referrer: str | None
    user_agent: str | None
    ip: str | None
    country: str | None
    is_bot: bool
    request_id: str
    rule: int | None
    destination: int | None
    visitor: str | None


def new_click(
    code: str,
    *,
    domain: str | None = None,
    referrer: str | None,
    user_agent: str | None,
    ip: str | None,
    country: str | None,
    head: bool,
    request_id: str | None,
    anonymize_ip: bool,
    rule: int | None = None,
    visitors: Visitors | None = None,
    destinations: list[Destination] | None = None,
) -> OutgoingClick:
    cid = click_id()
    ts = _clock.now()
    # From the full address, before it is anonymized (SPEC); per link: its
    # code on the default domain, host/code on another.
    visitor = (
        visitors.visitor(ts[:10], ip, user_agent, link_key(domain, code)) if visitors else None
    )
    return OutgoingClick(
        id=cid,
        code=code,
        domain=domain,
        ts=ts,
        referrer=referrer[:MAX_FIELD] if referrer else None,
        user_agent=user_agent[:MAX_FIELD] if user_agent else None,
        ip=anonymize(ip) if anonymize_ip else ip,
        country=country,
        is_bot=is_bot(user_agent, head),
        request_id=request_id or cid,
        rule=rule,
        destination=draw(destinations, visitor) if destinations else None,
        visitor=visitor,
    )
