"""Bounds on a request's head (request line and headers), enforced while it
arrives, before any ASGI app is called:

- over 16 KiB: 431, and the connection closed;
- not complete within :data:`HEAD_TIMEOUT` of the connection opening or
  the previous request being read: the connection closed (a head sent a
  byte a minute would otherwise hold it for ever: uvicorn's keep-alive
  timer only runs between requests);
- more than :data:`PIPELINED` requests queued behind the one being
  answered: the connection closed (one read of tiny pipelined requests
  would otherwise queue thousands of request cycles).

uvicorn's httptools protocol has no head limit of its own: the parser keeps
appending a header's pieces until the line ends, so a 10 MiB header is read
and copied in full before any application code could look at it. Here the
head is measured as it is parsed: the URL and headers the parser completes,
plus, while a piece is still unfinished, every byte of a read in which
nothing completed (all of it belongs to that piece). A read in which a
piece completed is not counted beyond it, so the count never exceeds the
head's true size, and a head over the limit is refused at most one read
(256 KiB) after it crossed it.
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
    """uvicorn's httptools protocol, with the bounds above."""

    _in_head = False  # between a message's start and its headers' end
    _completed = False  # a URL or header piece completed in the read being parsed
    _unfinished = 0  # bytes of the piece the parser is still accumulating
    _parsed = 0  # bytes of the URL and headers completed so far
    _refused = False
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        unfinished = self._in_head
        self._completed = False
        super().data_received(data)
        if unfinished and self._in_head and not self._completed:
            self._unfinished += len(data)
        if self._in_head and self._unfinished + self._parsed > HEAD_LIMIT:
            self._refuse()
        if self._refused and not self.transport.is_closing():
            self.transport.write(REFUSAL)
            self.transport.close()

    def _refuse(self) -> None:
        self._refused = True
        self._in_head = False
        self._stop_deadline()

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(HEAD_TIMEOUT, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        # Only a head still arriving (or none begun on a connection that
        # sent nothing yet) is cut; a request being answered is not.
        if (self._in_head or (self.cycle is None and not self.pipeline)) and not (
            self.transport.is_closing()
        ):
            self._refused = True
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._completed = True, True
        self._unfinished = self._parsed = 0
        if len(self.pipeline) >= PIPELINED:
            self._refused = True
            self.transport.close()
        else:
            self._start_deadline()

    def on_url(self, url: bytes) -> None:
        self._completed, self._unfinished = True, 0
        self._parsed += len(url)
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._completed, self._unfinished = True, 0
        self._parsed += len(name) + len(value) + 4  # ": " and CRLF
        if self._parsed > HEAD_LIMIT:
            self._refuse()
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_deadline()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
