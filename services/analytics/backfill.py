"""Backfills: replay ``CLICKS`` between two times into the aggregates.

A backfill pins its range to stream sequences when it is created
(``start_seq``..``end_seq``), reads them on the shared worker loop through a
consumer of its own, and stores ``next_seq`` after every batch, so a
restarted analytics service resumes where it stopped and a database outage
pauses it (the loop holds the batch) instead of failing it. Counting goes
through the same ledger as live clicks, so a range that was already counted,
or a batch handled twice after a crash, adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.analytics.payloads import Backfill
from services.analytics.store import AnalyticsStore
from shared import useragent
from shared.contracts import INVALID, Click
from shared.db import UNAVAILABLE, write_batch
from shared.http.problems import FieldError, Problem
from shared.jetstream import topology
from shared.jetstream.loops import wait_or_stop
from shared.jetstream.topology import Consumer
from shared.jetstream.worker import Delivery, Unavailable, Worker
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(Click).decode
ACTIVE = ("pending", "running")
# Backfills replaying at once in one analytics process (429 beyond).
RUNNING = 2


async def first_seq_at(nc: Client, at: datetime) -> int:
    """The first ``CLICKS`` sequence stored at or after ``at`` (last + 1 if none).

    A new consumer that starts by time reports the sequence before its
    starting point as delivered, which is exactly the question."""
    js = nc.jetstream()
    name = f"probe-{secrets.token_hex(6)}"
    info = await js.add_consumer(
        topology.CLICKS,
        ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=at,
            ack_policy=AckPolicy.NONE,
            filter_subject="clicks.>",
            inactive_threshold=30,
            mem_storage=True,
        ),
    )
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(topology.CLICKS, name)
    delivered = info.delivered.stream_seq if info.delivered else 0
    return int(delivered or 0) + 1


def _row(r: asyncpg.Record) -> Backfill:
    return Backfill(
        id=r["id"],
        status=r["state"],
        state=r["state"],
        from_=r["from_ts"].isoformat(),
        to=r["to_ts"].isoformat(),
        processed=r["processed"],
        total=r["total"],
        error=r["error"],
        created_at=r["created_at"].isoformat(),
        updated_at=r["updated_at"].isoformat(),
    )


class _Replay:
    """The batch handler of one backfill: count the clicks in range, store
    the progress, and say when the range is done. A re-classifying one
    counts only the clicks whose ``ts`` falls in its range (whose counts it
    deleted), each with its bot flag derived again: flagged by the gateway,
    or a bot by today's list."""

    def __init__(
        self,
        store: AnalyticsStore,
        backfill_id: str,
        end_seq: int,
        reclassify: tuple[datetime, datetime] | None = None,
    ) -> None:
        self._store = store
        self._id = backfill_id
        self._end = end_seq
        self._reclassify = reclassify
        self.finished = asyncio.Event()

    def _counted(self, click: Click) -> Click | None:
        if self._reclassify is None:
            return click
        start, end = self._reclassify
        if not start <= click.ts < end:
            return None
        if not click.is_bot and useragent.is_bot_agent(click.user_agent):
            return msgspec.structs.replace(click, is_bot=True)
        return click

    async def handle(self, batch: Sequence[Delivery[Click | None]]) -> Mapping[int, Exception]:
        seqs = [d.msg.metadata.sequence.stream for d in batch]
        clicks = [
            counted
            for d, seq in zip(batch, seqs, strict=True)
            if seq <= self._end and d.payload and (counted := self._counted(d.payload))
        ]
        try:
            refused = await write_batch(self._store.record, clicks) if clicks else {}
            await self._store.pool.execute(
                "UPDATE backfills SET next_seq = $2, processed = $2 - start_seq, "
                "updated_at = now() WHERE id = $1",
                self._id,
                min(max(seqs), self._end) + 1,
            )
        except UNAVAILABLE as exc:
            raise Unavailable(f"analytics database unavailable: {exc!r}") from exc
        if refused:
            # The live consumer dead-letters these same clicks; a backfill
            # only recounts, so it skips them rather than dead-letter twice.
            log.warning("backfill %s: %d click(s) refused, skipped", self._id, len(refused))
        if max(seqs) >= self._end:
            self.finished.set()
        # Every delivery is settled with an ack: counted, past the range, or
        # not a click (the live consumer dead-lettered that one already).
        return {}


async def _first_stored_at(js: JetStreamContext, first_seq: int) -> datetime | None:
    """When the oldest click ``CLICKS`` still holds was stored; None if the
    stream never dropped one (its first sequence is still 1)."""
    if first_seq <= 1:
        return None
    try:
        first = await js.get_msg(topology.CLICKS, first_seq)
    except NotFoundError:  # everything expired: nothing before now is held
        return datetime.now(UTC)
    return first.time or datetime.now(UTC)


def _click_or_none(msg: Msg) -> Click | None:
    try:
        return _decode(msg.data)
    except INVALID:
        return None


async def _drained(js: JetStreamContext, consumer: Consumer, end_seq: int) -> bool:
    """Nothing left to read in the range: the stream's limits removed what
    the consumer did not reach."""
    info = await js.consumer_info(consumer.stream, consumer.name)
    ack_floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return bool((ack_floor or 0) >= end_seq or (not info.num_pending and not info.num_ack_pending))


class Backfills:
    def __init__(
        self,
        nc: Client,
        store: AnalyticsStore,
        settings: WorkerSettings,
        api: asyncpg.Pool | None = None,
    ) -> None:
        """``api``: the pool the API's calls (create, get, list, cancel) use,
        apart from the replays' (the store's); None: the store's."""
        self._nc = nc
        self._store = store
        self._pool = store.pool
        self._api = api or store.pool
        self._settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def create(self, start: datetime, end: datetime, reclassify: bool = False) -> Backfill:
        # Each running backfill replays on the workers' pool beside the click
        # consumer: an ops key may keep only RUNNING of them busy at once.
        if len(self._tasks) >= RUNNING:
            raise Problem(
                429,
                f"{RUNNING} backfills are running in this process: wait for one to end",
                headers={"Retry-After": "30"},
            )
        if not reclassify:
            start_seq = await first_seq_at(self._nc, start)
            end_seq = await first_seq_at(self._nc, end) - 1
            row = await self._insert(start, end, start_seq, end_seq, reclassify=False)
        else:
            row = await self._reclassifying(start, end)
        if row["state"] == "pending":
            self._spawn(row["id"])
        return _row(row)

    async def _reclassifying(self, start: datetime, end: datetime) -> asyncpg.Record:
        """Replace the counts of ``[start, end)``, widened to whole hours (the
        aggregates' grain): delete them, and replay every click ``CLICKS``
        stored since ``start`` (a click is stored after its ``ts``, so those
        hold every click of the range), counting the ones in range again.
        Refused if the stream no longer holds all of the range: its counts
        would be deleted with nothing to count them again from."""
        start = start.replace(minute=0, second=0, microsecond=0)
        if end.replace(minute=0, second=0, microsecond=0) != end:
            end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        js = self._nc.jetstream()
        state = (await js.stream_info(topology.CLICKS)).state
        held_from = await _first_stored_at(js, state.first_seq)
        if held_from is not None and start < held_from:
            raise Problem.invalid(
                [
                    FieldError(
                        "from",
                        f"CLICKS holds clicks from {held_from.isoformat()} on; "
                        "an earlier range cannot be re-classified",
                    )
                ]
            )
        start_seq = await first_seq_at(self._nc, start)
        end_seq = int(state.last_seq)
        async with self._api.acquire() as conn, conn.transaction():
            # Counts and ledger go together: a click of the range whose count
            # is gone is gone from the ledger too, and the replay counts it
            # once more; one counted meanwhile by the live consumer stays
            # in the ledger, and the replay skips it.
            await conn.execute("DELETE FROM click_stats WHERE hour >= $1 AND hour < $2", start, end)
            await conn.execute(
                "DELETE FROM click_visitors WHERE hour >= $1 AND hour < $2", start, end
            )
            await conn.execute(
                "DELETE FROM destination_visitors WHERE hour >= $1 AND hour < $2", start, end
            )
            await conn.execute("DELETE FROM counted_clicks WHERE ts >= $1 AND ts < $2", start, end)
            return await self._insert(start, end, start_seq, end_seq, reclassify=True, conn=conn)

    async def _insert(
        self,
        start: datetime,
        end: datetime,
        start_seq: int,
        end_seq: int,
        *,
        reclassify: bool,
        conn: PoolConnectionProxy | None = None,
    ) -> asyncpg.Record:
        total = max(end_seq - start_seq + 1, 0)
        row = await (conn or self._api).fetchrow(
            "INSERT INTO backfills (id, from_ts, to_ts, state, start_seq, end_seq, next_seq, "
            "total, reclassify) VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8) RETURNING *",
            secrets.token_hex(8),
            start,
            end,
            "pending" if total else "done",
            start_seq,
            end_seq,
            total,
            reclassify,
        )
        assert row is not None
        return row

    async def get(self, backfill_id: str) -> Backfill | None:
        row = await self._api.fetchrow("SELECT * FROM backfills WHERE id = $1", backfill_id)
        return _row(row) if row else None

    async def list(self) -> list[Backfill]:
        rows = await self._api.fetch("SELECT * FROM backfills ORDER BY created_at DESC")
        return [_row(r) for r in rows]

    async def cancel(self, backfill_id: str) -> Backfill | None:
        await self._api.execute(
            "UPDATE backfills SET state = 'cancelled', updated_at = now() "
            "WHERE id = $1 AND state = ANY($2::text[])",
            backfill_id,
            list(ACTIVE),
        )
        task = self._tasks.pop(backfill_id, None)
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return await self.get(backfill_id)

    async def resume(self) -> int:
        """Start every backfill a previous run left pending or running."""
        rows = await self._pool.fetch(
            "SELECT id FROM backfills WHERE state = ANY($1::text[])", list(ACTIVE)
        )
        for r in rows:
            self._spawn(r["id"])
        return len(rows)

    async def stop(self) -> None:
        """Stop running backfills; their progress is stored and resumed later."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _spawn(self, backfill_id: str) -> None:
        if backfill_id not in self._tasks:
            self._tasks[backfill_id] = asyncio.create_task(
                self._run(backfill_id), name=f"backfill-{backfill_id}"
            )

    async def _run(self, backfill_id: str) -> None:
        try:
            await self._replay(backfill_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("backfill %s failed", backfill_id)
            await self._pool.execute(
                "UPDATE backfills SET state = 'failed', error = $2, updated_at = now() "
                "WHERE id = $1",
                backfill_id,
                repr(exc),
            )
        finally:
            self._tasks.pop(backfill_id, None)

    async def _replay(self, backfill_id: str) -> None:
        row = await self._pool.fetchrow("SELECT * FROM backfills WHERE id = $1", backfill_id)
        if row is None or row["state"] not in ACTIVE:
            return
        next_seq, end_seq = row["next_seq"], row["end_seq"]
        await self._pool.execute(
            "UPDATE backfills SET state = 'running', updated_at = now() WHERE id = $1", backfill_id
        )
        if next_seq <= end_seq:
            reclassify = (row["from_ts"], row["to_ts"]) if row["reclassify"] else None
            await self._run_consumer(backfill_id, next_seq, end_seq, reclassify)
        await self._while_unavailable(
            lambda: self._pool.execute(
                "UPDATE backfills SET state = 'done', processed = total, updated_at = now() "
                "WHERE id = $1 AND state = 'running'",
                backfill_id,
            )
        )

    async def _run_consumer(
        self,
        backfill_id: str,
        next_seq: int,
        end_seq: int,
        reclassify: tuple[datetime, datetime] | None,
    ) -> None:
        """Replay ``next_seq..end_seq`` on the shared worker loop, through a
        consumer of the backfill's own: a database outage holds the batch in
        hand (and the backfill) until the database is back, as it does for
        live clicks, instead of failing the backfill."""
        js = self._nc.jetstream()
        consumer = Consumer(topology.CLICKS, f"backfill-{backfill_id}", "clicks.>", "analytics")
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(consumer.stream, consumer.name)  # left by a killed run
        await js.add_consumer(
            consumer.stream,
            ConsumerConfig(
                name=consumer.name,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=next_seq,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._settings.ack_wait,
                max_deliver=max(self._settings.max_attempts, 1),
                filter_subject=consumer.filter_subject,
                # Gone by itself if the service dies mid-run and never resumes.
                inactive_threshold=300,
                mem_storage=True,
            ),
        )
        replay = _Replay(self._store, backfill_id, end_seq, reclassify)
        worker = Worker(self._nc, consumer, self._settings, _click_or_none, replay.handle)
        loop = asyncio.create_task(worker.run(replay.finished), name=consumer.name)
        try:
            while not replay.finished.is_set():
                if await wait_or_stop(replay.finished, 1.0):
                    break
                if await _drained(js, consumer, end_seq):
                    # The rest of the range was removed by the stream's limits.
                    replay.finished.set()
        finally:
            replay.finished.set()
            await loop
            with contextlib.suppress(Exception):
                await js.delete_consumer(consumer.stream, consumer.name)

    async def _while_unavailable(self, write: Callable[[], Awaitable[object]]) -> None:
        failures = 0
        while True:
            try:
                await write()
                return
            except UNAVAILABLE as exc:
                failures += 1
                delay = self._settings.retry_delay(failures)
                log.warning("backfills: database unavailable (%r); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
