"""A cap on a request's head (request line and headers), enforced while it
arrives: over 16 KiB, 431 and the connection closed, with no ASGI app called.

uvicorn's httptools protocol has no limit of its own: the parser keeps
appending a header's pieces until the line ends, so a 10 MiB header is read
and copied in full (and the URL is re-joined per piece) before any
application code could look at it. Here the bytes are counted per read:
once a head still unfinished has taken more than the limit, the request is
refused before the next read is parsed. A head that arrived whole in one
read is measured from its parsed parts when it completes.
"""

from __future__ import annotations

import json
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# SPEC ("Limits"): a request whose header block exceeds 16 KiB gets 431.
HEAD_LIMIT: Final = 16 * 1024

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
    """uvicorn's httptools protocol, refusing a head over :data:`HEAD_LIMIT`."""

    _in_head = False  # between a message's start and its headers' end
    _began = False  # a message began during the read being parsed
    _unfinished = 0  # bytes of later reads taken while its head is unfinished
    _parsed = 0  # bytes of its URL and headers as the parser handed them over
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        unfinished = self._in_head
        self._began = False
        super().data_received(data)
        # A read that began inside a head that is still unfinished is head
        # from end to end. (One in which a message began is not counted: it
        # may hold the previous message's body; the next read is.)
        if unfinished and self._in_head and not self._began:
            self._unfinished += len(data)
        if self._in_head and self._unfinished + self._parsed > HEAD_LIMIT:
            self._refuse()
        if self._refused and not self.transport.is_closing():
            self.transport.write(REFUSAL)
            self.transport.close()

    def _refuse(self) -> None:
        self._refused = True
        self._in_head = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began = True, True
        self._unfinished = self._parsed = 0

    def on_url(self, url: bytes) -> None:
        self._parsed += len(url)
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4  # ": " and CRLF
        if self._parsed > HEAD_LIMIT:
            self._refuse()
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
