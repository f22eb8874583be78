"""The DLQ: dead-lettering a message to ``dlq.<stream>.<consumer>`` with the
SPEC's headers, and listing, replaying and discarding dead letters (the
analytics service's DLQ endpoints and ``linkflow dlq`` both use these, so
both behave the same)."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec
import nats.errors
from nats.aio.client import Client
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
    INVALID,
    LINK_REFRESH,
    LINK_REFRESHED,
    Code,
    DomainHost,
    LinkRefresh,
    LinkRefreshed,
    encode,
    rfc3339,
)
from shared.jetstream.topology import CLICKS, DLQ, LINKS, Consumer

log = logging.getLogger(__name__)

# Header values are one line; a long error is cut so the DLQ entry stays readable.
_MAX_ERROR = 512
# JetStream's error codes for a sequence that is not (or no longer) in the
# stream: 10037 from a message get; from a message delete 10043 ("sequence
# not found": deleted already) and 10057 (beyond the last sequence).
NO_MESSAGE_FOUND: Final = (10037, 10043, 10057)
# How long a links.* replay waits for the cache-refresher's answer.
REFRESH_TIMEOUT: Final = 5.0
# A click's subject: clicks.<code> (the code's pattern is the contract's).
_CLICK_SUBJECT: Final = re.compile(r"clicks\.[A-Za-z0-9_-]{3,64}")


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
    # SPEC: ``<consumer>:<stream seq>`` (consumer names are unique across
    # streams), which another language's worker writes the same way.
    headers[HDR_MSG_ID] = f"{consumer.name}:{failed.stream_seq}"
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
    def stream(self) -> str:
        """The stream the letter's message came from (``dlq.<stream>.<consumer>``)."""
        parts = self.subject.split(".")
        return parts[1] if len(parts) == 3 else ""

    @property
    def consumer(self) -> str:
        return self.subject.rsplit(".", 1)[-1]

    def as_letter(self) -> Letter:
        """The letter as the API and ``linkflow dlq list --json`` show it."""
        try:
            payload: str = self.data.decode()
            encoding: Literal["utf-8", "base64"] = "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.data).decode(), "base64"
        return Letter(
            seq=self.seq,
            subject=self.subject,
            consumer=self.consumer,
            headers=self.headers,
            payload=payload,
            payload_encoding=encoding,
            stored_at=self.time.isoformat() if self.time else None,
        )


class Letter(msgspec.Struct, kw_only=True, frozen=True):
    """A dead letter: the failed message, and the DLQ's headers saying why."""

    seq: Annotated[int, msgspec.Meta(ge=1, description="its sequence in the DLQ stream")]
    subject: Annotated[str, msgspec.Meta(description="dlq.<stream>.<consumer>")]
    consumer: Annotated[str, msgspec.Meta(description="the consumer that gave up on it")]
    headers: dict[str, str]
    payload: Annotated[str, msgspec.Meta(description="the message's data, as payload_encoding")]
    payload_encoding: Literal["utf-8", "base64"]
    stored_at: (
        Annotated[
            str,
            msgspec.Meta(
                extra_json_schema={"format": "date-time"},
                description="when the DLQ stored it, RFC 3339",
            ),
        ]
        | None
    )


class NotInDlq(LookupError):
    """No such letter: never there, or another call replayed or discarded it."""


class NotReplayable(ValueError):
    """A letter that cannot be replayed as it is; discard it instead."""


class ReplayFailed(RuntimeError):
    """The replay did not happen (the cache-refresher did not refresh the
    link, or the republish failed); the letter is still in the DLQ."""


class _LinkRef(msgspec.Struct):
    code: Code
    domain: DomainHost | None = None


_link_ref = msgspec.json.Decoder(_LinkRef).decode
_refreshed = msgspec.json.Decoder(LinkRefreshed).decode


def _filter(consumer: str | None) -> str:
    return f"dlq.*.{consumer}" if consumer else "dlq.>"


def _letter(raw: Any, seq: int) -> DeadLetter:
    return DeadLetter(
        seq=raw.seq or seq,
        subject=raw.subject or "",
        data=raw.data or b"",
        headers=dict(raw.headers or {}),
        time=raw.time,
    )


def _gone(exc: APIError) -> bool:
    return isinstance(exc, NotFoundError) or exc.err_code in NO_MESSAGE_FOUND


async def get(js: JetStreamContext, seq: int) -> DeadLetter:
    try:
        raw = await js.get_msg(DLQ, seq)
    except APIError as exc:
        if _gone(exc):
            raise NotInDlq(f"no DLQ message with seq {seq}") from None
        raise
    return _letter(raw, seq)


async def _scan(
    js: JetStreamContext, consumer: str | None, last: int | None = None
) -> AsyncIterator[DeadLetter]:
    """The dead letters (of ``consumer``) in sequence order, up to ``last``."""
    seq = 1
    while last is None or seq <= last:
        try:
            raw = await js.get_msg(DLQ, seq, subject=_filter(consumer), next=True)
        except NotFoundError:
            return
        assert raw.seq is not None
        if last is not None and raw.seq > last:
            return
        yield _letter(raw, raw.seq)
        seq = raw.seq + 1


async def list_(
    js: JetStreamContext, consumer: str | None = None, limit: int = 50
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, optionally of one consumer."""
    out: list[DeadLetter] = []
    async for letter in _scan(js, consumer):
        out.append(letter)
        if len(out) >= limit:
            break
    return out


def _client(js: JetStreamContext) -> Client:
    # nats-py keeps a JetStream context's connection to itself; the refresh
    # request is core NATS on that same connection (and identity).
    nc: Client = js._nc
    return nc


async def refresh_link(nc: Client, code: str, domain: str | None = None) -> LinkRefreshed:
    """Ask the cache-refresher to rewrite the link's KV entry from the database.

    The answer comes on a subject of this request's own under LINK_REFRESHED
    (not an inbox: only the cache-refresher may publish there, so its
    identity needs no right to any service's inbox)."""
    reply = f"{LINK_REFRESHED}.{secrets.token_hex(12)}"
    sub = await nc.subscribe(reply)
    try:
        request = LinkRefresh(code=code, domain=domain)
        await nc.publish(LINK_REFRESH, encode(request), reply=reply)
        try:
            answer = await sub.next_msg(REFRESH_TIMEOUT)
        except nats.errors.TimeoutError:
            raise ReplayFailed(
                f"the cache-refresher did not answer within {REFRESH_TIMEOUT:g}s"
            ) from None
    finally:
        await sub.unsubscribe()
    headers = answer.headers or {}
    if headers.get("Status") == "503":
        raise ReplayFailed("no cache-refresher is running")
    if HDR_ERROR in headers:
        raise ReplayFailed(f"the cache-refresher could not refresh {code}: {headers[HDR_ERROR]}")
    return _refreshed(answer.data)


async def discard(js: JetStreamContext, seq: int) -> None:
    """Delete one letter. Of calls racing on one letter, exactly one deletes
    it; the others get NotInDlq."""
    try:
        await js.delete_msg(DLQ, seq)
    except APIError as exc:
        if _gone(exc):
            raise NotInDlq(f"no DLQ message with seq {seq}") from None
        raise


async def replay(js: JetStreamContext, seq: int) -> int | None:
    """Replay one dead letter; returns the stream sequence it was published
    as (None for a links.* letter, which publishes nothing).

    Calls racing on one letter (replays, discards, replay-alls) handle it
    once: the one that deletes it from the DLQ does it, the others get
    NotInDlq (the API's 404)."""
    letter = await get(js, seq)
    if letter.stream == LINKS:
        await _refresh(js, letter)
        return None
    if letter.stream == CLICKS:
        return await _republish(js, letter)
    # An advisory the rescue could not handle names a message it failed to
    # dead-letter; republishing one would need a right to the server's own
    # advisory subjects, which no service has.
    raise NotReplayable(f"DLQ message {seq} is from stream {letter.stream!r}: discard it")


async def _refresh(js: JetStreamContext, letter: DeadLetter) -> None:
    """A links.* letter: the cache-refresher re-reads the link from the
    database, then the letter is deleted. Refreshing is idempotent (the
    database's version, never an older one), so this order loses nothing:
    a call that loses the race to delete refreshed a link for nothing."""
    try:
        ref = _link_ref(letter.data)
    except INVALID as exc:
        raise NotReplayable(f"DLQ message {letter.seq} names no link ({exc}): discard it") from None
    await refresh_link(_client(js), ref.code, ref.domain)
    await discard(js, letter.seq)


async def _republish(js: JetStreamContext, letter: DeadLetter) -> int:
    """A clicks.* letter goes back to its original subject.

    The letter is deleted first: a delete is the one step of which exactly
    one racing call succeeds, so a letter is never both discarded and
    replayed, nor published twice. If the publish then fails, the letter is
    put back. The original headers go along (X-Request-Id,
    Linkflow-Enqueued-At) but not the DLQ's own: a replayed message that
    fails again is dead-lettered afresh. Its Nats-Msg-Id is new, so the
    server's duplicate window does not swallow it; the consumers' idempotent
    writes absorb a replay of a message that had in fact been handled."""
    subject = letter.headers.get(HDR_ORIGINAL_SUBJECT)
    if not subject:
        raise NotReplayable(f"DLQ message {letter.seq} has no {HDR_ORIGINAL_SUBJECT} header")
    # The header is the letter writer's word: whoever could write a letter
    # must not make a replay publish anywhere but a click's own subject.
    if not _CLICK_SUBJECT.fullmatch(subject):
        raise NotReplayable(f"DLQ message {letter.seq}: {subject!r} is not a click's subject")
    headers = {
        k: v
        for k, v in letter.headers.items()
        if k not in DLQ_HEADERS and k not in (HDR_MSG_ID, HDR_ORIGINAL_MSG_ID)
    }
    original_id = letter.headers.get(HDR_ORIGINAL_MSG_ID)
    headers[HDR_MSG_ID] = f"replay.{letter.seq}.{original_id or letter.headers.get(HDR_STREAM_SEQ)}"
    headers[HDR_REPLAYED_FROM] = str(letter.seq)
    await discard(js, letter.seq)
    try:
        ack = await js.publish(subject, letter.data, headers=headers)
    except Exception as exc:
        await _put_back(js, letter)
        raise ReplayFailed(f"could not publish to {subject}: {exc!r}; put back in the DLQ") from exc
    return int(ack.seq)


async def _put_back(js: JetStreamContext, letter: DeadLetter) -> None:
    """A letter whose replay failed returns to the DLQ (at a new sequence).
    Its dedup id is new too: the old one may still be in the duplicate
    window, which would swallow it."""
    headers = {**letter.headers, HDR_MSG_ID: f"restored.{letter.seq}.{secrets.token_hex(8)}"}
    try:
        await js.publish(letter.subject, letter.data, headers=headers)
    except Exception as exc:
        log.error(
            "DLQ message %d (%s) was not replayed and could not be put back: %s; it was %s",
            letter.seq,
            letter.subject,
            exc,
            letter.as_letter(),
        )
        raise
    log.warning("DLQ message %d was not replayed; put back in the DLQ", letter.seq)


@dataclass(frozen=True)
class ReplayedAll:
    replayed: int
    # Letters left in the DLQ because they cannot be replayed as they are.
    skipped: int


async def replay_all(js: JetStreamContext, consumer: str | None = None) -> ReplayedAll:
    """Replay the letters (of ``consumer``) present when the call starts,
    each at most once: a letter that fails again comes back at a sequence
    past the DLQ's last one of now, so it is left for the next call; one
    another call handles meanwhile is passed over."""
    last = (await js.stream_info(DLQ)).state.last_seq
    replayed = skipped = 0
    async for letter in _scan(js, consumer, last):
        try:
            await replay(js, letter.seq)
        except NotInDlq:
            continue
        except NotReplayable as exc:
            log.warning("replay-all left a letter: %s", exc)
            skipped += 1
            continue
        replayed += 1
    return ReplayedAll(replayed, skipped)


async def depth_by_consumer(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(DLQ, subjects_filter="dlq.>")
    out: dict[str, int] = {}
    for subject, count in (info.state.subjects or {}).items():
        consumer = subject.rsplit(".", 1)[-1]
        out[consumer] = out.get(consumer, 0) + count
    return out
