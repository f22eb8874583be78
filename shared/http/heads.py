"""Bounds on a request's head (request line and headers), enforced while it
arrives, before any ASGI app is called:

- over 16 KiB: 431, and the connection closed;
- not complete within :data:`HEAD_TIMEOUT` of its first byte (or, for the
  first request, of the connection opening): the connection closed (a head
  sent a byte a minute would otherwise hold it for ever: uvicorn's
  keep-alive timer only runs between requests);
- more than :data:`PIPELINED` requests queued behind the one being
  answered: the connection closed (one read of tiny pipelined requests
  would otherwise queue thousands of request cycles).

uvicorn's httptools protocol has no head limit of its own: the parser keeps
appending a header's pieces until the line ends, so a 10 MiB header is read
and copied in full before any application code could look at it. Here the
head is measured as it arrives: the reads are counted
while the head is unfinished, every read after the one it began in (all of
it is head); when it completes, a head that might be over the limit (its
reads add up to more) is measured from the URL and headers the parser
handed over. The count never exceeds the head's true size, and a head
over the limit is refused at most two reads (512 KiB) after it crossed it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# SPEC ("Limits"): a request whose header block exceeds 16 KiB gets 431.
HEAD_LIMIT: Final = 16 * 1024
HEAD_TIMEOUT: Final = 10.0
PIPELINED: Final = 16

_BODY: Final = json.dumps(
    {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": f"the request line and headers exceed {HEAD_LIMIT} bytes",
    }
).encode()
REFUSAL: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class BoundedHeads(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds above.

    Kept to as few Python calls per request as it can: a redirect costs
    some 80 µs, and each callback overridden here is paid by every one."""

    _in_head = False  # between a message's start and its headers' end
    _began = False  # a message began in the read being parsed
    _read = 0  # bytes of the read being parsed
    _first = 0  # bytes of the read the head began in (some may be before it)
    _counted = 0  # bytes of later reads taken while the head was unfinished
    _refused = False
    _began_at = 0.0  # loop time the current head (or the connection) began
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # One timer per connection, not one per request (arming and
        # cancelling one per redirect was felt): it looks at when the
        # current head began, and comes back.
        self._began_at = self.loop.time()
        self._deadline = self.loop.call_later(HEAD_TIMEOUT, self._check_head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        unfinished = self._in_head
        self._began, self._read = False, len(data)
        super().data_received(data)
        # A read that began inside a head still unfinished after it is head
        # from end to end. (One in which a message began is not counted: it
        # may hold the previous message's body; the next read is.)
        if unfinished and self._in_head and not self._began:
            self._counted += len(data)
            if self._counted > HEAD_LIMIT:
                self._refused = True
        if self._refused and not self.transport.is_closing():
            self.transport.write(REFUSAL)
            self.transport.close()

    def _check_head(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        waited = self.loop.time() - self._began_at
        # A head still arriving, or none begun on a connection that has sent
        # nothing yet; a request being answered is not cut.
        waiting = self._in_head or (self.cycle is None and not self.pipeline)
        if waiting and waited >= HEAD_TIMEOUT:
            self._refused = True
            self.transport.close()
            return
        again = HEAD_TIMEOUT - waited if waiting else HEAD_TIMEOUT
        self._deadline = self.loop.call_later(again, self._check_head)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began, self._counted = True, True, 0
        self._first = self._read
        self._began_at = self.loop.time()
        if len(self.pipeline) >= PIPELINED:
            self._refused = True
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The head is at most the reads it spans: only a head that might be
        # over the limit is measured, from its parts.
        spans = self._read if self._began else self._first + self._counted + self._read
        if spans > HEAD_LIMIT and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > HEAD_LIMIT
        ):
            self._refused = True
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
