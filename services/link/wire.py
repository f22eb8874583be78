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

Every INFO, the first and those a server sends later, is read as the official
clients read it. Its ``connect_urls`` (the cluster's other members) join the
pool of servers to try, reached as the server that named them was (scheme,
TLS name and credentials), so a gateway given one node's URL outlives that
node. ``"ldm": true`` says the server is in lame duck mode: after its grace
period (``lame_duck_grace_period``, 10 s by default) it closes its clients,
spread over ``lame_duck_duration``. The click connection does not wait for
that: it opens a connection to another member, sends the next groups there,
and closes the old one once every group written to it has its PubAck (what
is still unanswered then goes to the spool, through ``on_lost``). Each
connection has its own reply subjects, so a PubAck comes back on the
connection its group went out on. Redirects never wait for a move: they
write to whichever connection is current, or spool while there is none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import random
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
# The number of a connection that is gone: no PubAck will come for what was
# written to it.
LostCallback = Callable[[int], None]

_ACK_SID: Final = b"1"
# Pings without a pong before the connection counts as dead (as nats-py's
# max_outstanding_pings in shared.jetstream.bus).
MAX_OUTSTANDING_PINGS: Final = 2
# Between attempts to reach NATS: short, since clicks spool to disk meanwhile.
RECONNECT: Final = Backoff(initial=0.1, cap=2.0)
# Servers in the pool at most: a cluster's INFOs name each member, and a
# long-lived gateway sees members come and go (none is ever forgotten).
MAX_SERVERS: Final = 64


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls: bool = False
    # The name its TLS certificate is checked against, when not ``host``.
    tls_name: str | None = None


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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def discovered(pool: list[Server], origin: Server, connect_urls: object) -> list[Server]:
    """The servers of an INFO's ``connect_urls`` ("host:port", other members
    of the cluster) that ``pool`` lacks, as many as fit under MAX_SERVERS.

    They are reached as ``origin``, the server whose INFO named them, was:
    same scheme and credentials, as nats-py does. A member advertises an
    address; when ``origin`` was reached by name, TLS checks that name (a
    cluster's certificate names the service, rarely each address).
    """
    if not isinstance(connect_urls, list):
        return []
    known = {(s.host, s.port) for s in pool}
    name = origin.tls_name or origin.host
    found: list[Server] = []
    for entry in connect_urls:
        if len(pool) + len(found) >= MAX_SERVERS:
            break
        if not isinstance(entry, str):
            continue
        try:
            u = urlsplit(f"nats://{entry}")
            host, port = u.hostname, u.port or 4222
        except ValueError:
            continue
        if not host or (host, port) in known:
            continue
        known.add((host, port))
        tls_name = name if origin.tls and _is_ip(host) and not _is_ip(name) else None
        found.append(
            Server(host, port, origin.user, origin.password, origin.token, origin.tls, tls_name)
        )
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
    ``connect``), False when CONNECT went out at once. ``lame`` resolves
    when the server says it is in lame duck mode. PubAcks come to ``inbox``,
    this connection's own.
    """

    def __init__(
        self,
        server: Server,
        name: str,
        inbox: str,
        on_ack: AckCallback,
        on_close: Callable[[_Connection], None],
        creds: str = "",
        *,
        number: int = 0,
        on_info: Callable[[_Connection, dict[str, object]], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.greeted: asyncio.Future[bool] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.lame: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.pings_out = 0
        self.server = server
        self.number = number
        self.inbox = inbox
        # Groups written (one PubAck each) and not answered yet; ``drained``
        # resolves when that comes to 0, once someone waits for it.
        self.unanswered = 0
        self.drained: asyncio.Future[None] | None = None
        self._name = name
        self._prefix_len = len(inbox) + 1
        self._on_ack = on_ack
        self._on_close = on_close
        self._on_info = on_info
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

    def send(self, frames: bytes) -> None:
        """Write one group's frames, the last of which asks for a PubAck."""
        self.unanswered += 1
        assert self.transport is not None
        self.transport.write(frames)

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
        self.unanswered -= 1
        drained = self.drained
        if drained is not None and self.unanswered <= 0 and not drained.done():
            drained.set_result(None)
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
        elif line.startswith(b"INFO "):
            info = json.loads(line[5:])
            if not self._greeted:
                self._greeted = True
                self._hello(info)
            if info.get("ldm") and not self.lame.done():
                self.lame.set_result(None)
            if self._on_info is not None:
                self._on_info(self, info)
        elif line.startswith(b"-ERR"):
            reason = line[4:].strip().decode(errors="replace")
            log.warning("NATS refused the click connection's request: %s", reason)
            self._fail(ConnectionError(reason))
        # +OK needs nothing.

    def _hello(self, info: dict[str, object]) -> None:
        self._nonce = str(info.get("nonce") or "")
        if self.server.tls or info.get("tls_required"):
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
        server = self.server
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
            + f"\r\nSUB {self.inbox}.* {_ACK_SID.decode()}\r\nPING\r\n".encode()
        )


class ClickConnection:
    """Keeps one connection to NATS for clicks, reconnecting forever, and
    moves to another server before one in lame duck mode closes it.

    ``on_lost`` runs with a connection's number when it goes away, so that
    the publisher fails the groups written to it that still wait for a
    PubAck at once (they go to the spool) instead of at their deadlines.
    A connection being retired after a move is told the same way once it
    is closed, after its PubAcks came or ``drain_timeout`` passed.
    """

    def __init__(
        self,
        url: str,
        name: str,
        inbox: str,
        on_ack: AckCallback,
        on_lost: LostCallback,
        *,
        ping_interval: float = 5.0,
        connect_timeout: float = 2.0,
        drain_timeout: float = 5.0,
        creds: str = "",
    ) -> None:
        self._servers = parse_servers(url)
        self._cursor = 0
        self._creds = creds
        self._name = name
        self._inbox = inbox
        self._on_ack = on_ack
        self._on_lost = on_lost
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._drain_timeout = drain_timeout
        self._numbers = itertools.count(1)
        # The connection writes go to, and every connection not closed yet
        # (it and those being retired).
        self._conn: _Connection | None = None
        self._conns: set[_Connection] = set()
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def current(self) -> _Connection | None:
        """The connection to write groups to (``send``), None when there is none."""
        return self._conn

    @property
    def servers(self) -> tuple[Server, ...]:
        """The pool: the configured servers, then those the cluster named."""
        return tuple(self._servers)

    def _closed(self, conn: _Connection) -> None:
        """``conn`` is gone (or going): no more writes to it, and no PubAck
        will come for what is pending on it."""
        if conn not in self._conns:
            return  # never used, or already told
        self._conns.discard(conn)
        if self._conn is conn:
            self._conn = None
            self._up.clear()
        self._on_lost(conn.number)

    def _drop(self, conn: _Connection) -> None:
        self._closed(conn)
        assert conn.transport is not None
        conn.transport.close()  # a no-op once the server closed it

    def _use(self, conn: _Connection) -> None:
        self._conns.add(conn)
        self._conn = conn
        self._up.set()

    def _info(self, conn: _Connection, info: dict[str, object]) -> None:
        found = discovered(self._servers, conn.server, info.get("connect_urls"))
        if found:
            # Spread gateways over the members, as nats-py does.
            random.shuffle(found)
            self._servers += found
            log.info(
                "clicks: NATS names %s as well",
                ", ".join(f"{s.host}:{s.port}" for s in found),
            )

    async def start(self, wait: float) -> None:
        """Start connecting; return once connected or after ``wait`` seconds
        (redirects spool until the connection is up)."""
        self._task = asyncio.create_task(self._run(), name="click-connection")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), wait)

    async def stop(self) -> None:
        for task in (self._task, *self._retiring):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for conn in list(self._conns):
            self._drop(conn)

    def _next_server(self) -> Server:
        # The pool only grows, so turning through it reaches every member.
        server = self._servers[self._cursor % len(self._servers)]
        self._cursor += 1
        return server

    async def _run(self) -> None:
        conn = await self._connect()
        while True:
            successor: _Connection | None = None
            try:
                successor = await self._watch(conn)
            except Exception:  # the click path must outlive any surprise here
                log.exception("clicks: connection watch failed")
            if successor is not None:
                # From this turn on, groups go to the successor.
                self._use(successor)
                self._retire(conn)
                conn = successor
                continue
            self._drop(conn)
            log.warning("clicks: lost the connection to NATS; reconnecting")
            conn = await self._connect()

    async def _connect(self) -> _Connection:
        failures = 0
        while True:
            server = self._next_server()
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
            self._use(conn)
            return conn

    async def _successor(self, old: _Connection) -> _Connection | None:
        """A connection to another server of the pool than ``old``'s, trying
        each once; None if none answered."""
        for _ in range(len(self._servers)):
            server = self._next_server()
            if (server.host, server.port) == (old.server.host, old.server.port):
                continue
            try:
                conn = await self._open(server)
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                log.info("clicks: cannot move to NATS at %s:%d (%r)", server.host, server.port, exc)
                continue
            log.info(
                "clicks: NATS at %s:%d is in lame duck mode; clicks go to %s:%d now",
                old.server.host, old.server.port, server.host, server.port,
            )  # fmt: skip
            return conn
        return None

    def _retire(self, old: _Connection) -> None:
        task = asyncio.create_task(self._drain(old), name="click-connection-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, old: _Connection) -> None:
        """Close ``old`` once every group written to it has its PubAck (no
        more are written to it), its server closed it, or ``drain_timeout``
        passed; ``on_lost`` then fails what is still unanswered (to the spool).
        """
        if old.unanswered > 0 and not old.closed.done():
            old.drained = asyncio.get_running_loop().create_future()
            await asyncio.wait(
                [old.drained, old.closed],
                timeout=self._drain_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        self._drop(old)

    async def _open(self, server: Server) -> _Connection:
        loop = asyncio.get_running_loop()
        number = next(self._numbers)
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(
                    server,
                    self._name,
                    f"{self._inbox}.{number}",
                    self._on_ack,
                    self._closed,
                    self._creds,
                    number=number,
                    on_info=self._info,
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
                        server_hostname=server.tls_name or server.host,
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

    async def _watch(self, conn: _Connection) -> _Connection | None:
        """Ping every interval until ``conn`` is gone (None); a server that
        stops answering is dropped. Once its server is in lame duck mode,
        also look for another server (backing off between rounds) and return
        the first connection made: the server still serves ``conn`` for its
        grace period, which is what the move has to fit in."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self._ping_interval
        failures = 0
        while not conn.closed.done():
            wake: list[asyncio.Future[None]] = [conn.closed]
            timeout = next_ping - loop.time()
            if conn.lame.done():
                successor = await self._successor(conn)
                if successor is not None:
                    return successor
                failures += 1
                timeout = min(timeout, RECONNECT.delay(failures))
            else:
                wake.append(conn.lame)
            await asyncio.wait(wake, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
            if conn.closed.done() or loop.time() < next_ping:
                continue
            if conn.pings_out >= MAX_OUTSTANDING_PINGS:
                log.warning("clicks: NATS stopped answering pings")
                self._closed(conn)  # redirects stop writing to it now
                assert conn.transport is not None
                conn.transport.abort()
                await conn.closed
                return None
            conn.pings_out += 1
            conn.write(b"PING\r\n")
            next_ping = loop.time() + self._ping_interval
        return None
