"""Turning a redirect into a click on ``clicks.<code>`` and waiting for its PubAck."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import time
from datetime import UTC, datetime
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError

from shared import metrics
from shared.contracts import HDR_ENQUEUED_AT, HDR_MSG_ID, HDR_REQUEST_ID, rfc3339

# Crawlers, link-preview fetchers and HTTP libraries (the isbot list's most
# common tokens); their clicks are recorded with is_bot=true.
_BOT_RE: Final = re.compile(
    r"bot|crawl|spider|slurp|preview|facebookexternalhit|embedly|whatsapp|telegram|"
    r"slack|discord|skype|vkshare|pinterest|quora link|bitlybot|outbrain|nuzzel|"
    r"headless|lighthouse|curl|wget|python-|httpx|aiohttp|go-http-client|okhttp|java/|"
    r"libwww|apache-httpclient|axios|node-fetch|monitor|uptime",
    re.IGNORECASE,
)
# Referrer and user agent are cut to this length: a click stays small however
# large the visitor's headers are.
MAX_FIELD: Final = 1024
# Clicks per PubAck group: small enough that several groups are in flight at
# once, so JetStream stores one while the gateway answers the previous one
# (a single group per event-loop turn makes gateway and server take turns).
MAX_GROUP: Final = 8


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


class _Clock:
    """The current time as the SPEC's RFC 3339 string, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def now(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            self._ms = ms
            self._text = rfc3339(datetime.fromtimestamp(ms / 1000, UTC))
        return self._text


_clock = _Clock()
_encode = msgspec.json.Encoder().encode


class OutgoingClick(msgspec.Struct, frozen=True, gc=False):
    """A click as the gateway sends it: the ``Click`` contract with ``ts``
    already formatted (a test keeps the two field lists identical)."""

    id: str
    code: str
    ts: str
    referrer: str | None
    user_agent: str | None
    ip: str | None
    country: str | None
    is_bot: bool
    request_id: str


def new_click(
    code: str,
    *,
    referrer: str | None,
    user_agent: str | None,
    ip: str | None,
    country: str | None,
    head: bool,
    request_id: str | None,
    anonymize_ip: bool,
) -> OutgoingClick:
    cid = click_id()
    return OutgoingClick(
        id=cid,
        code=code,
        ts=_clock.now(),
        referrer=referrer[:MAX_FIELD] if referrer else None,
        user_agent=user_agent[:MAX_FIELD] if user_agent else None,
        ip=anonymize(ip) if anonymize_ip else ip,
        country=country,
        is_bot=is_bot(user_agent, head),
        request_id=request_id or cid,
    )


class NotConnected(Exception):
    pass


class ClickPublisher:
    """Publishes clicks to JetStream and resolves one future per PubAck.

    nats-py's ``publish_async`` does the same but costs several times more per
    message (a semaphore, a PubAck object, JSON parsing of every ack), and its
    futures have no timeout; on the redirect hot path every microsecond is a
    visitor waiting, so the gateway keeps its own small table of pending acks
    with a deadline each, swept by one task.
    """

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._pending: dict[str, tuple[asyncio.Future[None], float]] = {}
        self._tokens = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._batch: list[tuple[str, bytes, bytes]] = []
        self._group: asyncio.Future[None] | None = None
        self._sending: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack, pending_msgs_limit=1_000_000)
        self._sweeper = asyncio.create_task(self._sweep(), name="click-ack-sweeper")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def publish(self, click: OutgoingClick) -> None:
        """Return once JetStream has stored the click; raise if it did not in time."""
        if not self._nc.is_connected:
            # Queued while reconnecting, the click could be stored after the
            # visitor got a 503: fail at once instead.
            metrics.CLICK_PUBLISH_FAILURES.inc()
            raise NotConnected("NATS is not connected")
        payload = _encode(click)
        headers = (
            f"NATS/1.0\r\n{HDR_MSG_ID}: {click.id}\r\n{HDR_REQUEST_ID}: "
            f"{click.request_id}\r\n{HDR_ENQUEUED_AT}: {click.ts}\r\n\r\n"
        ).encode()
        self._batch.append((click.code, headers, payload))
        group = self._group
        if group is None:
            loop = asyncio.get_running_loop()
            group = self._group = loop.create_future()
            loop.call_soon(self._flush)
        elif len(self._batch) >= MAX_GROUP:
            self._flush()
        try:
            await group
        except BaseException:
            metrics.CLICK_PUBLISH_FAILURES.inc()
            raise

    def _flush(self) -> None:
        """Send every click queued in this event-loop turn in one write; only
        the last one asks for a PubAck.

        JetStream stores one connection's messages to a stream in the order
        they arrive, and TCP keeps that order, so the PubAck of the last
        message is the acknowledgement of the whole group: the group's
        redirects are answered after it, and all fail (503) if it fails or
        times out. The stream's limits (discard old, no per-message size or
        subject limits) leave no way for JetStream to refuse one click of a
        group but store a later one. One ack per turn instead of per click is
        what keeps the redirect within reach of a bare 302.
        """
        batch, group = self._batch, self._group
        self._batch, self._group = [], None
        if group is None or not batch:
            return
        token = str(next(self._tokens))
        self._pending[token] = (group, time.monotonic() + self._timeout)
        frames = bytearray()
        last = len(batch) - 1
        for i, (code, headers, payload) in enumerate(batch):
            reply = f" {self._prefix}{token}" if i == last else ""
            frames += (
                f"HPUB clicks.{code}{reply} {len(headers)} {len(headers) + len(payload)}\r\n"
            ).encode()
            frames += headers
            frames += payload
            frames += b"\r\n"
        task = asyncio.ensure_future(self._send(bytes(frames), group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, frames: bytes, group: asyncio.Future[None]) -> None:
        try:
            # nats-py's publish() builds and validates one frame per call;
            # the group's frames are built above and queued as one write.
            await self._nc._send_command(frames)
            await self._nc._flush_pending()
        except Exception as exc:
            if not group.done():
                group.set_exception(exc)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is None or entry[0].done():
            return  # already timed out
        # A PubAck is {"stream":…,"seq":…}; only an error reply mentions "error".
        if b'"error"' in msg.data or (msg.headers and "Status" in msg.headers):
            entry[0].set_exception(APIError(description=msg.data.decode(errors="replace")))
        else:
            entry[0].set_result(None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self._timeout / 4, 0.25))
            now = time.monotonic()
            # Insertion order is deadline order: stop at the first one still alive.
            for token, (future, deadline) in list(self._pending.items()):
                if deadline > now:
                    break
                del self._pending[token]
                if not future.done():
                    future.set_exception(TimeoutError("no PubAck in time"))
