"""The DLQ: dead-lettering a message to ``dlq.<stream>.<consumer>`` with the
SPEC's headers, and listing, replaying and discarding dead letters (the
analytics service's DLQ endpoints and ``linkflow dlq`` both use these, so
both behave the same)."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from shared.contracts import (
    DLQ_HEADERS,
    HDR_ATTEMPTS,
    HDR_ERROR,
    HDR_FAILED_AT,
    HDR_FIRST_FAILED_AT,
    HDR_MSG_ID,
    HDR_ORIGINAL_MSG_ID,
    HDR_ORIGINAL_SUBJECT,
    HDR_REPLAYED_FROM,
    HDR_REQUEST_ID,
    HDR_STREAM_SEQ,
    rfc3339,
)
from shared.jetstream.topology import DLQ, Consumer

log = logging.getLogger(__name__)

# Header values are one line; a long error is cut so the DLQ entry stays readable.
_MAX_ERROR = 512
# JetStream's error codes for a sequence that is not (or no longer) in the
# stream: 10037 from a message get, 10057 from a message delete.
NO_MESSAGE_FOUND = (10037, 10057)


def dlq_subject(consumer: Consumer) -> str:
    return f"dlq.{consumer.stream}.{consumer.name}"


@dataclass(frozen=True)
class Failed:
    """What the DLQ needs to know of a failed message, from a delivery or a stream get."""

    subject: str
    data: bytes
    headers: dict[str, str]
    stream_seq: int
    attempts: int

    @classmethod
    def from_msg(cls, msg: Msg) -> Failed:
        meta = msg.metadata
        return cls(
            msg.subject, msg.data, dict(msg.headers or {}), meta.sequence.stream, meta.num_delivered
        )


def dlq_headers(
    failed: Failed, consumer: Consumer, exc: Exception, first_failed_at: float | None
) -> dict[str, str]:
    now = time.time()
    headers = dict(failed.headers)
    original_id = headers.get(HDR_MSG_ID)
    if original_id:
        headers[HDR_ORIGINAL_MSG_ID] = original_id
    # The DLQ's own dedup id is per consumer and stream sequence: two
    # consumers may dead-letter the same click, and a message must land once
    # whether the worker dead-letters it, crashes between the DLQ publish and
    # the term, or the server's max-deliveries advisory reports it as well.
    headers[HDR_MSG_ID] = f"{consumer.stream}.{consumer.name}.{failed.stream_seq}"
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:_MAX_ERROR]
    headers.update(
        {
            HDR_ORIGINAL_SUBJECT: failed.subject,
            HDR_STREAM_SEQ: str(failed.stream_seq),
            HDR_ATTEMPTS: str(failed.attempts),
            HDR_ERROR: error,
            HDR_FIRST_FAILED_AT: rfc3339(datetime.fromtimestamp(first_failed_at or now, UTC)),
            HDR_FAILED_AT: rfc3339(datetime.fromtimestamp(now, UTC)),
        }
    )
    return headers


async def publish(
    js: JetStreamContext,
    failed: Failed,
    consumer: Consumer,
    exc: Exception,
    first_failed_at: float | None = None,
) -> None:
    await js.publish(
        dlq_subject(consumer),
        failed.data,
        headers=dlq_headers(failed, consumer, exc, first_failed_at),
    )


async def dead_letter(
    js: JetStreamContext,
    msg: Msg,
    consumer: Consumer,
    exc: Exception,
    first_failed_at: float | None = None,
) -> bool:
    """Publish to the DLQ, then term the original. If the DLQ publish fails
    the original is left unacked, so JetStream redelivers it: never lost."""
    failed = Failed.from_msg(msg)
    try:
        await publish(js, failed, consumer, exc, first_failed_at)
    except Exception as dlq_exc:
        log.error("%s: could not dead-letter seq %d: %s", consumer.name, failed.stream_seq, dlq_exc)
        return False
    await msg.term()
    log.warning(
        "%s: dead-lettered seq %d: %s",
        consumer.name,
        failed.stream_seq,
        exc,
        extra={"request_id": failed.headers.get(HDR_REQUEST_ID)},
    )
    return True


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: datetime | None

    @property
    def consumer(self) -> str:
        return self.subject.rsplit(".", 1)[-1]

    def as_json(self) -> dict[str, Any]:
        try:
            payload: str = self.data.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.data).decode(), "base64"
        return {
            "seq": self.seq,
            "subject": self.subject,
            "consumer": self.consumer,
            "headers": self.headers,
            "payload": payload,
            "payload_encoding": encoding,
            "stored_at": self.time.isoformat() if self.time else None,
        }


class NotInDlq(LookupError):
    pass


def _filter(consumer: str | None) -> str:
    return f"dlq.*.{consumer}" if consumer else "dlq.>"


async def get(js: JetStreamContext, seq: int) -> DeadLetter:
    try:
        raw = await js.get_msg(DLQ, seq)
    except APIError as exc:
        if isinstance(exc, NotFoundError) or exc.err_code in NO_MESSAGE_FOUND:
            raise NotInDlq(f"no DLQ message with seq {seq}") from None
        raise
    return DeadLetter(
        seq=raw.seq or seq,
        subject=raw.subject or "",
        data=raw.data or b"",
        headers=dict(raw.headers or {}),
        time=raw.time,
    )


async def list_(
    js: JetStreamContext, consumer: str | None = None, limit: int = 50
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, optionally of one consumer."""
    out: list[DeadLetter] = []
    seq = 1
    while len(out) < limit:
        try:
            raw = await js.get_msg(DLQ, seq, subject=_filter(consumer), next=True)
        except NotFoundError:
            break
        assert raw.seq is not None
        out.append(
            DeadLetter(
                seq=raw.seq,
                subject=raw.subject or "",
                data=raw.data or b"",
                headers=dict(raw.headers or {}),
                time=raw.time,
            )
        )
        seq = raw.seq + 1
    return out


async def replay(js: JetStreamContext, seq: int) -> int:
    """Publish a dead letter's payload to its original subject, then remove
    it from the DLQ. Returns the new stream sequence of the replayed message.

    The original headers go along (X-Request-Id, Linkflow-Enqueued-At) but
    not the DLQ's own: a replayed message that fails again is dead-lettered
    afresh. Its Nats-Msg-Id is new, so the server's duplicate window does not
    swallow it; the consumers' idempotent writes absorb a replay of a message
    that had in fact been handled."""
    letter = await get(js, seq)
    subject = letter.headers.get(HDR_ORIGINAL_SUBJECT)
    if not subject:
        raise NotInDlq(f"DLQ message {seq} has no {HDR_ORIGINAL_SUBJECT} header")
    headers = {
        k: v
        for k, v in letter.headers.items()
        if k not in DLQ_HEADERS and k not in (HDR_MSG_ID, HDR_ORIGINAL_MSG_ID)
    }
    original_id = letter.headers.get(HDR_ORIGINAL_MSG_ID)
    headers[HDR_MSG_ID] = f"replay.{seq}.{original_id or letter.headers.get(HDR_STREAM_SEQ)}"
    headers[HDR_REPLAYED_FROM] = str(seq)
    ack = await js.publish(subject, letter.data, headers=headers)
    await js.delete_msg(DLQ, seq)
    return int(ack.seq)


async def replay_all(js: JetStreamContext, consumer: str | None = None) -> int:
    count = 0
    while True:
        batch = await list_(js, consumer, limit=100)
        if not batch:
            return count
        for letter in batch:
            await replay(js, letter.seq)
            count += 1


async def discard(js: JetStreamContext, seq: int) -> None:
    try:
        await js.delete_msg(DLQ, seq)
    except APIError as exc:
        if isinstance(exc, NotFoundError) or exc.err_code in NO_MESSAGE_FOUND:
            raise NotInDlq(f"no DLQ message with seq {seq}") from None
        raise


async def depth_by_consumer(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(DLQ, subjects_filter="dlq.>")
    out: dict[str, int] = {}
    for subject, count in (info.state.subjects or {}).items():
        consumer = subject.rsplit(".", 1)[-1]
        out[consumer] = out.get(consumer, 0) + count
    return out
