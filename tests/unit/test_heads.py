"""The head bounds of every service's HTTP server, fed as the network would
deliver a request: in reads of any size, pipelined, or never finished."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from shared.http import heads
from shared.http.heads import HEAD_LIMIT, BoundedHeads


class Transport(asyncio.Transport):
    """What the protocol wrote, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def connection() -> tuple[BoundedHeads, Transport]:
    config = uvicorn.Config(_app, http=BoundedHeads, ws="none", log_level="warning")
    config.load()
    protocol = BoundedHeads(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def request(head_bytes: int, header: int | None = None) -> bytes:
    """A GET whose head (request line and headers) is about ``head_bytes``:
    one long cookie, or headers of ``header`` bytes each."""
    start = b"GET / HTTP/1.1\r\nhost: x\r\n"
    size = header or head_bytes - len(start) - 4
    lines = [
        b"x-h%d: " % i + b"c" * (size - 12) + b"\r\n"
        for i in range((head_bytes - len(start) - 4) // size)
    ]
    return start + b"".join(lines) + b"\r\n"


def feed(protocol: BoundedHeads, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        protocol.data_received(data[i : i + size])


@pytest.mark.parametrize("header", [None, 500, 2000])
@pytest.mark.parametrize("read", [1, 536, 1460, 4000, 65536])
async def test_a_head_under_the_limit_passes_in_reads_of_any_size(
    read: int, header: int | None
) -> None:
    protocol, transport = connection()
    feed(protocol, request(HEAD_LIMIT - 200, header), read)
    assert protocol.cycle is not None, transport.written[:60]
    assert not transport.closed
    protocol.connection_lost(None)


@pytest.mark.parametrize("read", [536, 4000, 65536])
async def test_a_long_url_under_the_limit_passes(read: int) -> None:
    protocol, transport = connection()
    feed(protocol, b"GET /" + b"u" * 16000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", read)
    assert protocol.cycle is not None
    assert not transport.closed
    protocol.connection_lost(None)


@pytest.mark.parametrize("read", [536, 4000, 65536, 1 << 20])
async def test_a_head_over_the_limit_gets_431_within_a_read_of_it(read: int) -> None:
    protocol, transport = connection()
    data = request(10 << 20)
    sent = 0
    while not transport.closed and sent < len(data):
        protocol.data_received(data[sent : sent + read])
        sent += read
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert transport.closed
    assert protocol.cycle is None  # no app was called
    assert sent <= HEAD_LIMIT + 2 * max(read, 1024)
    protocol.connection_lost(None)


@pytest.mark.parametrize("first", [17 * 1024, 60 * 1024])
async def test_a_head_over_the_limit_split_after_most_of_it_gets_431(first: int) -> None:
    protocol, transport = connection()
    data = request(64 * 1024)
    protocol.data_received(data[:first])
    protocol.data_received(data[first:])
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert protocol.cycle is None
    protocol.connection_lost(None)


async def test_many_small_headers_over_the_limit_get_431() -> None:
    protocol, transport = connection()
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(3000))
    feed(protocol, b"GET / HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n", 1460)
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert protocol.cycle is None
    protocol.connection_lost(None)


async def test_pipelined_requests_past_the_bound_close_the_connection() -> None:
    protocol, transport = connection()
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n" * 10_000)
    assert transport.closed
    assert len(protocol.pipeline) <= heads.PIPELINED
    protocol.connection_lost(None)


async def test_a_head_never_finished_is_cut_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heads, "HEAD_TIMEOUT", 0.05)
    protocol, transport = connection()
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: a")
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, done.set)  # wait-ok: past the patched deadline
    await done.wait()
    assert transport.closed
    assert protocol.cycle is None
    protocol.connection_lost(None)
