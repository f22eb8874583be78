"""The receiver of ``linkflow bench --webhooks``: a subscriber's server,
run by :func:`shared.bench.drain.asgi` under uvicorn (httptools, uvloop,
HTTP/1.1 keep-alive), in a process of its own so that it is never what
the deliveries wait for.

``POST /hook`` takes a delivery and answers ``204``, noting its
``webhook-id`` and when the first delivery of each id arrived;
``GET /tally`` answers what it saw (a :class:`Tally`), ``POST /reset``
forgets it. It verifies no signature: the webhooks service's own tests do.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec


class Tally(msgspec.Struct, frozen=True):
    """What the receiver saw since its last reset: requests, distinct
    ``webhook-id`` values, and the monotonic clock when the first and the
    last of those distinct ids arrived."""

    requests: int = 0
    distinct: int = 0
    first: float | None = None
    last: float | None = None
    # The longest wait between two distinct ids' arrivals: a stall.
    gap: float = 0.0

    @property
    def duplicates(self) -> int:
        """Deliveries of an id already received (delivery is at least once)."""
        return self.requests - self.distinct

    @property
    def seconds(self) -> float:
        """From the first distinct id's arrival to the last's."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first

    @property
    def rate(self) -> float:
        """Distinct deliveries per second, first to last (n - 1 intervals)."""
        if self.distinct < 2 or self.seconds <= 0:
            return 0.0
        return (self.distinct - 1) / self.seconds

    @property
    def rate_but_gap(self) -> float:
        """The same, less the longest pause: the pace while deliveries flow."""
        if self.distinct < 2 or self.seconds - self.gap <= 0:
            return 0.0
        return (self.distinct - 1) / (self.seconds - self.gap)


decode_tally = msgspec.json.Decoder(Tally).decode


class Seen:
    """The receiver's count, in the receiving process."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.requests = 0
        self.first: float | None = None
        self.last: float | None = None
        self.gap = 0.0

    def take(self, webhook_id: str | None, at: float) -> None:
        self.requests += 1
        if webhook_id is None or webhook_id in self.ids:
            return
        self.ids.add(webhook_id)
        if self.first is None:
            self.first = at
        if self.last is not None:
            self.gap = max(self.gap, at - self.last)
        self.last = at

    def tally(self) -> Tally:
        return Tally(self.requests, len(self.ids), self.first, self.last, self.gap)


_seen = Seen()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _seen
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    body = b""
    if method == "POST" and path == "/hook":
        more = True
        while more:  # the whole request read before answering it
            more = (await receive()).get("more_body", False)
        webhook_id = next((v.decode() for k, v in scope["headers"] if k == b"webhook-id"), None)
        _seen.take(webhook_id, time.monotonic())
        status = 204
    elif method == "GET" and path == "/tally":
        status, body = 200, msgspec.json.encode(_seen.tally())
    elif method == "POST" and path == "/reset":
        _seen = Seen()
        status = 204
    else:
        status = 404
    headers = []  # a 204 has no body, and says nothing of one
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
