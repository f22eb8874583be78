"""Publishing clicks: one PubAck per group of clicks, the spool when NATS can't take them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import Final

import msgspec

from services.link.clicks import OutgoingClick
from services.link.spool import Record, Spool
from services.link.spool import read as read_spool
from services.link.wire import ClickConnection
from shared import metrics
from shared.contracts import HDR_ENQUEUED_AT, HDR_MSG_ID, HDR_REQUEST_ID

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

# Clicks per PubAck group: small enough that several groups are in flight at
# once, so JetStream stores one while the gateway answers the previous one
# (a single group per event-loop turn makes gateway and server take turns).
# Only for an R1 stream: see services.link.replicas.
MAX_GROUP: Final = 8

# Clicks written but not yet acknowledged, at most. JetStream queues what a
# stream has not stored yet and past its limit (max_buffered_msgs: 10,000 on
# nats-server 2.11-2.13, 100,000 since 2.14) drops it: a click without a
# reply subject silently, so a group's PubAck could cover a click that was
# never stored. Gateways x this bound must stay below that limit; at ~1 ms
# per PubAck it still lets one gateway carry a million clicks a second.
MAX_IN_FLIGHT: Final = 1024
# Spooled clicks sent per PubAck when replaying.
REPLAY_CHUNK: Final = 256


class NotConnected(Exception):
    pass


class Refused(Exception):
    """JetStream answered a group with an error instead of a PubAck."""


class ClickPublisher:
    """Publishes clicks to JetStream on its own connection (services.link.wire)
    and resolves one future per PubAck.

    The gateway keeps its own small table of pending acks with a deadline
    each, swept by one task: PubAck futures have no timeout of their own, and
    on the redirect hot path every microsecond is a visitor waiting.
    """

    def __init__(
        self,
        nats_url: str,
        timeout: float,
        spool: Spool | None = None,
        *,
        ping_interval: float = 5.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_group: int = MAX_GROUP,
        creds: str = "",
        inbox_prefix: str = "_INBOX",
    ) -> None:
        self._inbox = f"{inbox_prefix}.{secrets.token_hex(11)}"
        self._link = ClickConnection(
            nats_url,
            "link-clicks",
            self._inbox,
            self._on_ack,
            self._lost,
            ping_interval=ping_interval,
            # A connection being retired (its server in lame duck mode) is
            # closed once its groups are answered, or by then spooled.
            drain_timeout=timeout,
            creds=creds,
        )
        self._spool = spool
        self._replayer: asyncio.Task[None] | None = None
        self._timeout = timeout
        # token -> (the group's future, its deadline, its number of clicks,
        # the number of the connection it went out on)
        self._pending: dict[bytes, tuple[asyncio.Future[None], float, int, int]] = {}
        # Groups past their deadline (their clicks spooled) whose PubAck has
        # not come: their clicks may still sit in the server's ingest queue,
        # so they keep their room until it comes or their connection goes.
        # token -> (number of clicks, connection number)
        self._late: dict[bytes, tuple[int, int]] = {}
        self._max_in_flight = max_in_flight
        # Clicks one PubAck may stand for (1: every click has its own).
        self.max_group = max_group
        self._in_flight = 0
        self._waiting = 0
        self._room = asyncio.Event()
        self._tokens = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._batch: list[Record] = []
        self._group: asyncio.Future[None] | None = None
        self._flush_scheduled = False

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def connection(self) -> ClickConnection:
        return self._link

    @property
    def in_flight(self) -> int:
        """Clicks written to NATS whose PubAck has not come yet."""
        return self._in_flight

    async def start(self, connect_wait: float = 2.0) -> None:
        await self._link.start(connect_wait)
        self._sweeper = asyncio.create_task(self._sweep(), name="click-ack-sweeper")
        if self._spool is not None:
            self._spool.open()
            self._replayer = asyncio.create_task(self._replay_forever(), name="spool-replay")

    async def stop(self) -> None:
        """Wait for outstanding PubAcks (each has its deadline), then stop the
        background tasks and the connection and close the spool; what is left
        in it is replayed by the next start."""
        outstanding = [future for future, _, _, _ in self._pending.values()]
        if outstanding:
            await asyncio.wait(outstanding, timeout=self._timeout + 1)
        for task in (self._replayer, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._link.stop()
        if self._spool is not None:
            await self._spool.close()

    async def _replay_forever(self) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(0.2)
            if not self._link.connected or not self._spool.records:
                continue
            try:
                await self._replay(self._spool)
            except Exception as exc:  # NATS went away again: the next round resumes
                log.warning("spool replay paused: %r", exc)

    async def _replay(self, spool: Spool) -> None:
        async with spool.lock:
            segments = spool.seal()
        loop = asyncio.get_running_loop()
        for segment in segments:
            chunk = min(REPLAY_CHUNK, self._max_in_flight)
            for records, offset, size in read_spool(segment, chunk):
                await self._wait_for_room(len(records))
                # A whole chunk per PubAck where a group may be acknowledged
                # as one (R1), else a PubAck per click, all awaited.
                step = len(records) if self.max_group > 1 else 1
                groups = []
                for start in range(0, len(records), step):
                    group: asyncio.Future[None] = loop.create_future()
                    self._send(records[start : start + step], group)
                    groups.append(group)
                await asyncio.gather(*groups)
                spool.replayed(segment, offset, len(records), size)
            spool.finished(segment)
            log.info("spool segment %s replayed", segment.name)

    async def publish(self, click: OutgoingClick) -> None:
        """Return once the click is safe: stored by JetStream or, when NATS
        cannot take it, in the spool. Raises if neither could (spool full)."""
        payload = _encode(click)
        headers = (
            f"NATS/1.0\r\n{HDR_MSG_ID}: {click.id}\r\n{HDR_REQUEST_ID}: "
            f"{click.request_id}\r\n{HDR_ENQUEUED_AT}: {click.ts}\r\n\r\n"
        ).encode()
        record = (click.code, headers, payload)
        if self._link.connected:
            try:
                # _wait_for_room's test, inline: no coroutine per redirect.
                if self._in_flight + len(self._batch) >= self._max_in_flight:
                    await self._wait_for_room()
                await self._join_group(record)
                return
            except Exception as exc:
                metrics.CLICK_PUBLISH_FAILURES.inc()
                log.warning("click %s not acknowledged (%r); spooling it", click.id, exc)
        if self._spool is None:
            raise NotConnected("NATS did not take the click and there is no spool")
        await self._spool.append(record)
        metrics.SPOOL_WRITTEN.inc()

    async def _wait_for_room(self, clicks: int = 1) -> None:
        """Wait, up to the PubAck timeout, until ``clicks`` more fit under
        ``max_in_flight`` (a redirect's click goes to the spool otherwise)."""
        deadline = time.monotonic() + self._timeout
        self._waiting += 1
        try:
            while self._in_flight + len(self._batch) + clicks > self._max_in_flight:
                self._room.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._in_flight} clicks already wait for a PubAck")
                await asyncio.wait_for(self._room.wait(), remaining)
        finally:
            self._waiting -= 1

    def _release(self, clicks: int) -> None:
        self._in_flight -= clicks
        if self._waiting:
            self._room.set()

    def _join_group(self, record: Record) -> asyncio.Future[None]:
        batch = self._batch
        batch.append(record)
        group = self._group
        if group is None:
            loop = asyncio.get_running_loop()
            group = self._group = loop.create_future()
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        if len(batch) >= self.max_group:
            # Sent at once rather than at the end of the turn: the sooner
            # JetStream has it, the sooner its visitors get their answer.
            self._batch, self._group = [], None
            self._send(batch, group)
        return group

    def _flush(self) -> None:
        """Send the clicks left over from this event-loop turn."""
        self._flush_scheduled = False
        if self._group is not None:
            batch, group = self._batch, self._group
            self._batch, self._group = [], None
            self._send(batch, group)

    def _send(self, batch: list[Record], group: asyncio.Future[None]) -> None:
        """Write a group's frames; only the last click asks for a PubAck.

        JetStream stores one connection's messages to a stream in the order
        they arrive, and TCP keeps that order, so the PubAck of a group's last
        message is the acknowledgement of the whole group: the group's
        redirects are answered after it, and all fail over to the spool if it
        fails or times out. The stream's limits (discard old, no per-message
        size or subject limits) leave no way for JetStream to refuse one click
        of a group but store a later one; its ingest queue would, which is
        what MAX_IN_FLIGHT keeps clear of. All of this holds for a stream of
        one replica; a replicated one gets groups of one (``max_group``, set
        from services.link.replicas). One ack per group of clicks from the
        same turn instead of one per click is what keeps the redirect within
        reach of a bare 302; groups stay small so that JetStream stores one
        while the gateway answers the one before.
        """
        conn = self._link.current
        if conn is None:
            group.set_exception(NotConnected("no connection to NATS"))
            return
        token = b"%d" % next(self._tokens)
        try:
            frames = bytearray()
            # The connection's own inbox: the PubAck comes back on it.
            reply = f" {conn.inbox}.{token.decode()}"
            last = len(batch) - 1
            for i, (code, headers, payload) in enumerate(batch):
                frames += (
                    f"HPUB clicks.{code}{reply if i == last else ''} "
                    f"{len(headers)} {len(headers) + len(payload)}\r\n"
                ).encode()
                frames += headers
                frames += payload
                frames += b"\r\n"
        except Exception as exc:  # a group must never be left waiting forever
            log.exception("clicks could not be sent")
            group.set_exception(exc)
            return
        self._pending[token] = (group, time.monotonic() + self._timeout, len(batch), conn.number)
        self._in_flight += len(batch)
        conn.send(bytes(frames))
        metrics.CLICK_GROUPS.inc()

    def _on_ack(self, token: bytes, error: str | None) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:  # late: its redirects have been answered from the spool
            late = self._late.pop(token, None)
            if late is not None:
                self._release(late[0])
            return
        future, _, clicks, _ = entry
        self._release(clicks)
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(Refused(error))

    def _lost(self, number: int) -> None:
        """Connection ``number`` is gone: no PubAck will come for what was
        written to it (groups on another connection, after a move away from
        a server in lame duck mode, still wait for theirs)."""
        for token, (clicks, on) in list(self._late.items()):
            if on == number:
                del self._late[token]
                self._release(clicks)
        gone = [token for token, entry in self._pending.items() if entry[3] == number]
        for token in gone:
            future, _, clicks, _ = self._pending.pop(token)
            self._release(clicks)
            if not future.done():
                future.set_exception(NotConnected("lost the connection to NATS"))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self._timeout / 4, 0.25))
            now = time.monotonic()
            # Insertion order is deadline order: stop at the first one still alive.
            for token, (future, deadline, clicks, number) in list(self._pending.items()):
                if deadline > now:
                    break
                del self._pending[token]
                self._late[token] = (clicks, number)
                if not future.done():
                    future.set_exception(TimeoutError("no PubAck in time"))
