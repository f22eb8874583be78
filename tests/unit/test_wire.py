"""The click connection's URL parsing and its reading of the server's bytes,
however the stream is cut into reads."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.link.wire import MAX_SERVERS, Server, _Connection, discovered, parse_servers


def test_parse_servers() -> None:
    assert parse_servers("nats://127.0.0.1:4222") == [Server("127.0.0.1", 4222)]
    assert parse_servers("nats://tok@h1, h2:5000") == [
        Server("h1", 4222, token="tok"),
        Server("h2", 5000),
    ]
    assert parse_servers("nats://al%40ice:p%3Ass@h") == [Server("h", 4222, "al@ice", "p:ss")]
    assert parse_servers("tls://u:p@h:4443") == [Server("h", 4443, "u", "p", tls=True)]
    with pytest.raises(ValueError, match="nats:// and tls://"):
        parse_servers("ws://h:4222")
    with pytest.raises(ValueError, match="no NATS server"):
        parse_servers(" , ")


def ignore(conn: _Connection) -> None:
    pass


class Wire:
    """What the connection writes back to the server."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


SERVER_BYTES = (
    b'INFO {"server_id":"x","headers":true,"max_payload":1048576}\r\n'
    b"PING\r\n"
    b"PONG\r\n"
    b'MSG _INBOX.abc.7 1 30\r\n{"stream":"CLICKS","seq":1234}\r\n'
    b"HMSG _INBOX.abc.8 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    b'MSG _INBOX.abc.9 1 52\r\n{"error":{"code":503,"description":"stream offline"}}\r\n'
    b"MSG other.subject 2 2\r\nhi\r\n"
    b"-ERR 'Unknown Protocol Operation'\r\n"
    b"+OK\r\n"
)


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, len(SERVER_BYTES)])
async def test_reads_acks_and_control_lines_across_any_split(chunk: int) -> None:
    acks: list[tuple[bytes, str | None]] = []
    conn = _Connection(
        Server("h", 4222, token="t"),
        "link-clicks",
        "_INBOX.abc",
        lambda t, e: acks.append((t, e)),
        ignore,
    )
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    for i in range(0, len(SERVER_BYTES), chunk):
        conn.data_received(SERVER_BYTES[i : i + chunk])

    assert conn.ready.done()
    assert conn.ready.exception() is None
    assert acks[0] == (b"7", None)
    assert acks[1] == (b"8", "NATS/1.0 503")
    assert acks[2][0] == b"9"
    assert "stream offline" in (acks[2][1] or "")
    assert len(acks) == 3  # the message on another subscription is not an ack

    connect, rest = wire.written.split(b"\r\n", 1)
    options: dict[str, Any] = json.loads(connect.removeprefix(b"CONNECT "))
    assert options["auth_token"] == "t"
    assert options["headers"] is True
    assert options["no_responders"] is True
    assert rest == b"SUB _INBOX.abc.* 1\r\nPING\r\nPONG\r\n"  # and PONG answers PING


async def test_refusal_before_ready_fails_the_connect() -> None:
    conn = _Connection(Server("h", 4222), "n", "_INBOX.x", lambda t, e: None, ignore)
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.data_received(b"INFO {\"auth_required\":true}\r\n-ERR 'Authorization Violation'\r\n")
    with pytest.raises(ConnectionError, match="Authorization Violation"):
        await conn.ready


@pytest.mark.parametrize("url", ["nats://u:p@h", "tls://u:p@h"])
async def test_no_credentials_in_the_clear_before_tls(url: str) -> None:
    conn = _Connection(parse_servers(url)[0], "n", "_INBOX.x", lambda t, e: None, ignore)
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(b'INFO {"tls_required":true}\r\n')
    assert await conn.greeted  # the handshake comes first
    assert wire.written == b""


async def test_tls_url_to_a_server_without_tls_fails_clearly() -> None:
    conn = _Connection(Server("h", 4222, tls=True), "n", "_INBOX.x", lambda t, e: None, ignore)
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(b'INFO {"server_id":"x"}\r\n')
    with pytest.raises(ConnectionError, match="offers no TLS"):
        await conn.greeted
    assert wire.written == b""


async def test_a_lost_connection_says_so_at_once() -> None:
    closed: list[_Connection] = []
    conn = _Connection(Server("h", 4222), "n", "_INBOX.x", lambda t, e: None, closed.append)
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.connection_lost(None)
    # In the same turn: the publisher must stop writing to it right away.
    assert closed == [conn]
    assert conn.closed.done()
    # Lost before the server's INFO: the connect, waiting on that, gives up.
    assert isinstance(conn.greeted.exception(), ConnectionError)


def test_discovered_servers_are_reached_as_the_one_that_named_them() -> None:
    origin = Server("nats.internal", 4222, "u", "p")
    pool = [origin, Server("10.0.0.1", 4222)]
    urls = ["10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.2:4222", "[::1]:5222", "10.0.0.3", 7, ":x"]
    assert discovered(pool, origin, urls) == [
        Server("10.0.0.2", 4222, "u", "p"),  # once, with origin's credentials
        Server("::1", 5222, "u", "p"),
        Server("10.0.0.3", 4222, "u", "p"),
    ]
    assert discovered(pool, origin, None) == []  # an INFO without connect_urls

    # Over TLS, by name: an advertised address is checked against that name.
    tls = Server("nats.internal", 4222, token="t", tls=True)
    assert discovered([tls], tls, ["10.0.0.2:4222", "n2.internal:4222"]) == [
        Server("10.0.0.2", 4222, token="t", tls=True, tls_name="nats.internal"),
        Server("n2.internal", 4222, token="t", tls=True),
    ]
    by_ip = Server("10.0.0.1", 4222, tls=True)
    assert discovered([by_ip], by_ip, ["10.0.0.2:4222"]) == [Server("10.0.0.2", 4222, tls=True)]


def test_the_pool_is_bounded() -> None:
    pool = [Server("h", 4222)]
    found = discovered(pool, pool[0], [f"10.0.{i // 256}.{i % 256}:4222" for i in range(1000)])
    assert len(pool) + len(found) == MAX_SERVERS


async def test_later_infos_are_read_and_lame_duck_mode_is_noticed() -> None:
    infos: list[dict[str, object]] = []
    conn = _Connection(
        Server("h", 4222), "n", "_INBOX.x", lambda t, e: None, ignore,
        on_info=lambda c, info: infos.append(info),
    )  # fmt: skip
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.data_received(b'INFO {"connect_urls":["a:1"]} \r\nPONG\r\n')
    assert conn.ready.done()
    assert not conn.lame.done()
    conn.data_received(b'INFO {"connect_urls":["b:1"],"ldm":true}\r\n')
    assert conn.lame.done()
    assert [i["connect_urls"] for i in infos] == [["a:1"], ["b:1"]]


async def test_drained_once_every_group_is_answered() -> None:
    conn = _Connection(Server("h", 4222), "n", "_INBOX.x.1", lambda t, e: None, ignore)
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.send(b"group 1")
    conn.send(b"group 2")
    conn.drained = asyncio.get_running_loop().create_future()
    conn.data_received(b"MSG _INBOX.x.1.1 1 2\r\n{}\r\n")
    assert conn.unanswered == 1
    assert not conn.drained.done()
    conn.data_received(b"HMSG _INBOX.x.1.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n")  # an answer too
    assert conn.drained.done()
