"""The redirect's own NATS connection: click frames out, PubAcks in.

nats-py costs the gateway several event-loop turns per click: a task to queue
the publish, its flusher task to write it, its reader task to parse the
PubAck, the subscription's task to run the callback. Each turn is one more
pass over every connection the gateway serves, which is latency every
visitor waits out. It also has no public call to send frames built ahead.
So the click path speaks the few operations it needs (CONNECT, SUB, HPUB,
MSG/HMSG, PING/PONG; see the NATS client protocol) from the asyncio protocol
callbacks: a group's frames go out in the turn its redirects ran, and its
PubAck resolves their future in the turn it arrives. Everything else the
gateway does on NATS (KV, link events, health) stays on nats-py.

Servers come from the same ``LINKFLOW_NATS_URL``: ``nats://`` or ``tls://``
URLs, comma-separated ones tried in turn, with ``user:password@`` or
``token@``, or a credentials file (``LINKFLOW_NATS_CREDS``: a user JWT and
its NKey seed, whose signature of the server's nonce proves the identity).
As with nats-py, the connection turns to TLS after the server's INFO when
the URL says ``tls://`` or the server requires it, verified against the
system's CAs (``SSL_CERT_FILE`` names a private one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast
from urllib.parse import unquote, urlsplit

import nkeys

from shared.backoff import Backoff

log = logging.getLogger(__name__)

# (reply subject's last token, error text or None) for each PubAck.
AckCallback = Callable[[bytes, str | None], None]

_ACK_SID: Final = b"1"
# Pings without a pong before the connection counts as dead (as nats-py's
# max_outstanding_pings in shared.jetstream.bus).
MAX_OUTSTANDING_PINGS: Final = 2
# Between attempts to reach NATS: short, since clicks spool to disk meanwhile.
RECONNECT: Final = Backoff(initial=0.1, cap=2.0)


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls: bool = False


def parse_servers(url: str) -> list[Server]:
    """``nats|tls://[user:password@|token@]host[:port]``, comma-separated."""
    found: list[Server] = []
    for part in url.split(","):
        text = part.strip()
        if not text:
            continue
        if "://" not in text:
            text = f"nats://{text}"
        u = urlsplit(text)
        if u.scheme not in ("nats", "tls"):
            raise ValueError(
                f"the gateway's click connection speaks nats:// and tls://, not {u.scheme}://"
            )
        user = unquote(u.username) if u.username else None
        password = unquote(u.password) if u.password else None
        host, port, tls = u.hostname or "127.0.0.1", u.port or 4222, u.scheme == "tls"
        if user is not None and password is None:
            found.append(Server(host, port, token=user, tls=tls))
        else:
            found.append(Server(host, port, user, password, tls=tls))
    if not found:
        raise ValueError(f"no NATS server in {url!r}")
    return found


_CREDS_BLOCK: Final = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}END \1-{3,}")


def read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and NKey seed of a NATS credentials file (read at each
    connect, as nats-py does, so that a rotated file is picked up)."""
    blocks = dict(_CREDS_BLOCK.findall(Path(path).read_text()))
    jwt, seed = blocks.get("NATS USER JWT"), blocks.get("USER NKEY SEED")
    if not jwt or not seed:
        raise ValueError(f"{path} is not a NATS credentials file (user JWT and NKey seed)")
    return jwt, seed.encode()


def sign_nonce(seed: bytes, nonce: str) -> str:
    signed = nkeys.from_seed(bytearray(seed)).sign(nonce.encode())
    return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()


class _Connection(asyncio.Protocol):
    """One TCP connection to one server, ready once the first PONG answers CONNECT.

    ``greeted`` resolves on the server's INFO: True when the connection must
    turn to TLS first (then ``ClickConnection`` upgrades it and calls
    ``connect``), False when CONNECT went out at once.
    """

    def __init__(
        self,
        server: Server,
        name: str,
        inbox: str,
        on_ack: AckCallback,
        on_close: Callable[[_Connection], None],
        creds: str = "",
    ) -> None:
        loop = asyncio.get_running_loop()
        self.greeted: asyncio.Future[bool] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.pings_out = 0
        self._server = server
        self._name = name
        self._inbox = inbox
        self._prefix_len = len(inbox) + 1
        self._on_ack = on_ack
        self._on_close = on_close
        self._buf = bytearray()
        self._greeted = False
        self._creds = creds
        self._nonce = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def _fail(self, exc: Exception) -> None:
        # The connect waits on greeted, then on ready: fail the one it is at.
        future = self.ready if self.greeted.done() else self.greeted
        if not future.done():
            future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection closed: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)
        # Told at once, not through the future a turn later: uvloop raises on
        # a write to a transport whose connection is lost.
        self._on_close(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            op = bytes(buf[pos : pos + 4])
            if op in (b"MSG ", b"HMSG"):
                # MSG <subject> <sid> [reply] <#bytes> | HMSG ... <#hdr> <#total>
                args = bytes(buf[pos:end]).split()
                start = end + 2
                stop = start + int(args[-1])
                if stop + 2 > size:
                    break  # the rest of this message is still on its way
                self._message(args, bytes(buf[start:stop]), int(args[-2]) if op == b"HMSG" else 0)
                pos = stop + 2
            else:
                self._control(bytes(buf[pos:end]))
                pos = end + 2
        if pos:
            del buf[:pos]

    def _message(self, args: list[bytes], body: bytes, header_len: int) -> None:
        if args[2] != _ACK_SID:
            return
        token = args[1][self._prefix_len :]
        error: str | None = None
        if header_len:
            # "NATS/1.0 503" (no responders: the stream is gone) or another status.
            status = body[:header_len].split(b"\r\n", 1)[0].split(b" ", 2)
            if len(status) > 1:
                error = body[:header_len].split(b"\r\n", 1)[0].decode(errors="replace")
            body = body[header_len:]
        if error is None and b'"error"' in body:
            # A PubAck is {"stream":…,"seq":…}; only a refusal mentions "error".
            error = body.decode(errors="replace")
        self._on_ack(token, error)

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG\r\n")
        elif line == b"PONG":
            self.pings_out = 0
            if not self.ready.done():
                self.ready.set_result(None)
        elif line.startswith(b"INFO ") and not self._greeted:
            self._greeted = True
            self._hello(json.loads(line[5:]))
        elif line.startswith(b"-ERR"):
            reason = line[4:].strip().decode(errors="replace")
            log.warning("NATS refused the click connection's request: %s", reason)
            self._fail(ConnectionError(reason))
        # +OK and later INFOs (cluster changes, lame duck) need nothing.

    def _hello(self, info: dict[str, object]) -> None:
        self._nonce = str(info.get("nonce") or "")
        if self._server.tls or info.get("tls_required"):
            # Nothing more in the clear: CONNECT (and its credentials) waits
            # for the handshake.
            if info.get("tls_required") or info.get("tls_available"):
                self.greeted.set_result(True)
            else:
                self._fail(ConnectionError("the server offers no TLS"))
            return
        self.greeted.set_result(False)
        self.connect()

    def connect(self) -> None:
        options: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "lang": "python",
            "version": "linkflow-clicks",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
            "name": self._name,
        }
        server = self._server
        if self._creds:
            try:
                jwt, seed = read_creds(self._creds)
                options["jwt"], options["sig"] = jwt, sign_nonce(seed, self._nonce)
            except (OSError, ValueError, nkeys.NkeysError) as exc:
                self._fail(ConnectionError(f"credentials {self._creds}: {exc}"))
                assert self.transport is not None
                self.transport.abort()
                return
        if server.token is not None:
            options["auth_token"] = server.token
        elif server.user is not None:
            options["user"] = server.user
            options["pass"] = server.password or ""
        self.write(
            b"CONNECT "
            + json.dumps(options, separators=(",", ":")).encode()
            + f"\r\nSUB {self._inbox}.* {_ACK_SID.decode()}\r\nPING\r\n".encode()
        )


class ClickConnection:
    """Keeps one connection to NATS for clicks, reconnecting forever.

    ``on_lost`` runs when a connection goes away, so that the publisher fails
    the groups still waiting for a PubAck at once (they go to the spool)
    instead of at their deadlines.
    """

    def __init__(
        self,
        url: str,
        name: str,
        inbox: str,
        on_ack: AckCallback,
        on_lost: Callable[[], None],
        *,
        ping_interval: float = 5.0,
        connect_timeout: float = 2.0,
        creds: str = "",
    ) -> None:
        self._servers = parse_servers(url)
        self._creds = creds
        self._name = name
        self._inbox = inbox
        self._on_ack = on_ack
        self._on_lost = on_lost
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def write(self, frames: bytes) -> bool:
        """Queue ``frames`` on the connection; False when there is none."""
        conn = self._conn
        if conn is None:
            return False
        conn.write(frames)
        return True

    def _closed(self, conn: _Connection) -> None:
        """``conn`` is gone (or going): no more writes to it, and no PubAck
        will come for what is pending on it."""
        if self._conn is conn:
            self._conn = None
            self._up.clear()
            self._on_lost()

    async def start(self, wait: float) -> None:
        """Start connecting; return once connected or after ``wait`` seconds
        (redirects spool until the connection is up)."""
        self._task = asyncio.create_task(self._run(), name="click-connection")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        attempt, failures = 0, 0
        while True:
            server = self._servers[attempt % len(self._servers)]
            attempt += 1
            try:
                conn = await self._open(server)
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                if not failures:
                    log.warning(
                        "clicks: cannot reach NATS at %s:%d (%r)", server.host, server.port, exc
                    )
                failures += 1
                await asyncio.sleep(RECONNECT.delay(failures))
                continue
            if failures:
                log.info("clicks: connected to NATS at %s:%d", server.host, server.port)
            failures = 0
            self._conn = conn
            self._up.set()
            try:
                await self._watch(conn)
            except Exception:  # the click path must outlive any surprise here
                log.exception("clicks: connection watch failed")
            finally:
                self._closed(conn)
                assert conn.transport is not None
                conn.transport.close()  # a no-op once the server closed it
            log.warning("clicks: lost the connection to NATS; reconnecting")

    async def _open(self, server: Server) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(
                    server, self._name, self._inbox, self._on_ack, self._closed, self._creds
                ),
                server.host,
                server.port,
            )
            try:
                if await conn.greeted:
                    assert conn.transport is not None
                    upgraded = await loop.start_tls(
                        conn.transport,
                        conn,
                        ssl.create_default_context(),
                        server_hostname=server.host,
                    )
                    if upgraded is None:
                        raise ConnectionError("closed during the TLS handshake")
                    conn.transport = upgraded
                    conn.connect()
                await conn.ready
            except BaseException:
                # This connect has failed: whatever the connection reports
                # from here on (a lost TLS handshake, say) has no reader.
                if not conn.ready.done():
                    conn.ready.cancel()
                elif not conn.ready.cancelled():
                    conn.ready.exception()
                assert conn.transport is not None
                conn.transport.abort()
                raise
        return conn

    async def _watch(self, conn: _Connection) -> None:
        """Ping every interval; a server that stops answering is dropped."""
        while True:
            done, _ = await asyncio.wait([conn.closed], timeout=self._ping_interval)
            if done or conn.closed.done():  # (lost while this task waited its turn)
                return
            if conn.pings_out >= MAX_OUTSTANDING_PINGS:
                log.warning("clicks: NATS stopped answering pings")
                self._closed(conn)  # redirects stop writing to it now
                assert conn.transport is not None
                conn.transport.abort()
                await conn.closed
                return
            conn.pings_out += 1
            conn.write(b"PING\r\n")
