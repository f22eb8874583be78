"""Dead-lettering: move a message to ``dlq.<stream>.<consumer>`` with the SPEC's headers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.contracts import (
    HDR_ATTEMPTS,
    HDR_ERROR,
    HDR_FAILED_AT,
    HDR_FIRST_FAILED_AT,
    HDR_MSG_ID,
    HDR_ORIGINAL_SUBJECT,
    HDR_STREAM_SEQ,
    rfc3339,
)
from shared.topology import Consumer

log = logging.getLogger(__name__)

# Header values are one line; a long error is cut so the DLQ entry stays readable.
_MAX_ERROR = 512
HDR_ORIGINAL_MSG_ID = "Linkflow-Original-Msg-Id"


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
    log.warning("%s: dead-lettered seq %d: %s", consumer.name, failed.stream_seq, exc)
    return True
