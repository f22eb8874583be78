"""Publishing clicks: one PubAck per group of clicks, the spool when NATS can't take them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError

from services.link.clicks import OutgoingClick
from services.link.spool import Spool
from services.link.spool import read as read_spool
from shared import metrics
from shared.contracts import HDR_ENQUEUED_AT, HDR_MSG_ID, HDR_REQUEST_ID

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

# Clicks per PubAck group: small enough that several groups are in flight at
# once, so JetStream stores one while the gateway answers the previous one
# (a single group per event-loop turn makes gateway and server take turns).
MAX_GROUP: Final = 8

Record = tuple[str, bytes, bytes]  # code, NATS header block, payload
# Spooled clicks sent per PubAck when replaying.
REPLAY_CHUNK: Final = 256


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

    def __init__(self, nc: Client, timeout: float, spool: Spool | None = None) -> None:
        self._nc = nc
        self._spool = spool
        self._replayer: asyncio.Task[None] | None = None
        self._timeout = timeout
        self._prefix = ""
        self._pending: dict[str, tuple[asyncio.Future[None], float]] = {}
        self._tokens = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._batch: list[Record] = []
        self._group: asyncio.Future[None] | None = None
        self._sending: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack, pending_msgs_limit=1_000_000)
        self._sweeper = asyncio.create_task(self._sweep(), name="click-ack-sweeper")
        if self._spool is not None:
            self._spool.open()
            self._replayer = asyncio.create_task(self._replay_forever(), name="spool-replay")

    async def stop(self) -> None:
        """Wait for outstanding PubAcks (each has its deadline), then stop the
        background tasks and close the spool; what is left in it is replayed
        by the next start."""
        outstanding = [future for future, _ in self._pending.values()]
        if outstanding:
            await asyncio.wait(outstanding, timeout=self._timeout + 1)
        for task in (self._replayer, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._spool is not None:
            await self._spool.close()

    async def _replay_forever(self) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(0.2)
            if not self._nc.is_connected or not self._spool.records:
                continue
            try:
                await self._replay(self._spool)
            except Exception as exc:  # NATS went away again: the next round resumes
                log.warning("spool replay paused: %r", exc)

    async def _replay(self, spool: Spool) -> None:
        async with spool.lock:
            segments = spool.seal()
        for segment in segments:
            for records, offset, size in read_spool(segment, REPLAY_CHUNK):
                group: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._dispatch(records, group)
                await group
                spool.replayed(segment, offset, len(records), size)
            spool.finished(segment)
            log.info("spool segment %s replayed", segment.name)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def publish(self, click: OutgoingClick) -> None:
        """Return once the click is safe: stored by JetStream or, when NATS
        cannot take it, in the spool. Raises if neither could (spool full)."""
        payload = _encode(click)
        headers = (
            f"NATS/1.0\r\n{HDR_MSG_ID}: {click.id}\r\n{HDR_REQUEST_ID}: "
            f"{click.request_id}\r\n{HDR_ENQUEUED_AT}: {click.ts}\r\n\r\n"
        ).encode()
        record = (click.code, headers, payload)
        if self._nc.is_connected:
            try:
                await self._join_group(record)
                return
            except Exception as exc:
                metrics.CLICK_PUBLISH_FAILURES.inc()
                log.warning("click %s not acknowledged (%r); spooling it", click.id, exc)
        if self._spool is None:
            raise NotConnected("NATS is not connected and there is no spool")
        # Not connected: nats-py would buffer the publish for after the
        # reconnect, with no PubAck in time; the spool is the safe place.
        await self._spool.append(record)
        metrics.SPOOL_WRITTEN.inc()

    def _join_group(self, record: Record) -> asyncio.Future[None]:
        self._batch.append(record)
        group = self._group
        if group is None:
            loop = asyncio.get_running_loop()
            group = self._group = loop.create_future()
            loop.call_soon(self._flush)
        elif len(self._batch) >= MAX_GROUP:
            self._flush()
        return group

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
        if group is not None and batch:
            self._dispatch(batch, group)

    def _dispatch(self, batch: list[Record], group: asyncio.Future[None]) -> None:
        """Queue the group's frames as one write; ``group`` resolves with the PubAck."""
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
