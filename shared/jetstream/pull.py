"""A lean pull-consumer fetch for the worker loop.

nats-py's ``fetch()`` spawns a task and a ``wait_for`` per message received
(``Subscription.next_msg``), which caps a Python worker far below what one
INSERT per batch can absorb. This fetcher sends the same JetStream pull
requests (``$JS.API.CONSUMER.MSG.NEXT``) to one inbox and collects the
replies in a callback:

1. a ``no_wait`` request for a whole batch returns at once with what is
   available (the server ends it with a 404/408 status, or by filling it);
2. when nothing was available, a long-poll for one message waits up to the
   timeout, and the batch is then topped up with another ``no_wait`` request.

So a busy consumer gets full batches without waiting, and an idle one wakes
on the first message, with no pull request left open between calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# Statuses that end a pull request: no messages, request expired, consumer
# or leadership changed, max waiting/ack pending reached.
_TERMINAL = frozenset({"404", "408", "409"})


class Puller:
    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._buffer: list[Msg] = []
        self._want = 0
        self._got = 0
        self._done = asyncio.Event()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=1_000_000
        )

    async def stop(self) -> list[Msg]:
        """Unsubscribe; returns messages that arrived but were never handed out."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        left, self._buffer = self._buffer, []
        return left

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and "Status" in headers:
            if headers["Status"] in _TERMINAL:
                self._done.set()
            return  # 100 heartbeats and flow control: nothing to hand out
        self._buffer.append(msg)
        self._got += 1
        if self._got >= self._want:
            self._done.set()

    async def _request(self, batch: int, *, no_wait: bool, wait: float) -> None:
        self._want, self._got = batch, 0
        self._done.clear()
        body: dict[str, object] = {"batch": batch}
        if no_wait:
            body["no_wait"] = True
        else:
            body["expires"] = int(wait * 1e9)
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)
        # The server ends a request itself; the extra second covers a reply
        # lost to a reconnect.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), wait + 1.0)

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to ``batch`` messages; an empty list after ``wait`` seconds with none."""
        if not self._buffer:
            await self._request(batch, no_wait=True, wait=wait)
        if not self._buffer:
            await self._request(1, no_wait=False, wait=wait)
            if self._buffer and batch > 1:
                await self._request(batch - len(self._buffer), no_wait=True, wait=wait)
        msgs, self._buffer = self._buffer[:batch], self._buffer[batch:]
        return msgs


async def ack_all(nc: Client, msgs: list[Msg]) -> None:
    """Ack every message in one write (``Msg.ack`` would validate, frame and
    queue each one separately). Sent as a publish, like nats-py's own acks:
    the handler's transaction has committed, so a lost ack means a
    redelivery, which the idempotent writes absorb."""
    await _reply_all(nc, msgs, b"")


async def in_progress_all(nc: Client, msgs: list[Msg]) -> None:
    """``+WPI`` for every message: restarts each one's ack wait."""
    await _reply_all(nc, msgs, b"+WPI")


async def _reply_all(nc: Client, msgs: list[Msg], body: bytes) -> None:
    if not msgs:
        return
    # nats-py has no public call to queue pre-built frames; publish() does
    # exactly these two private steps per message. Should a nats-py release
    # rename them, the public call still does the job, one message at a time.
    send = getattr(nc, "_send_command", None)
    flush = getattr(nc, "_flush_pending", None)
    if send is None or flush is None:
        for m in msgs:
            await nc.publish(m.reply, body)
        return
    tail = f" {len(body)}\r\n".encode() + body + b"\r\n"
    await send(b"".join(b"PUB " + m.reply.encode() + tail for m in msgs))
    await flush()
