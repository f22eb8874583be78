"""Backfills: replay ``CLICKS`` between two times into the aggregates.

A backfill pins its range to stream sequences when it is created
(``start_seq``..``end_seq``), reads them through a pull consumer of its own,
and stores ``next_seq`` after every batch, so a restarted analytics service
resumes where it stopped. Counting goes through the same ledger as live
clicks, so a range that was already counted, or a batch handled twice after
a crash, adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.analytics.store import AnalyticsStore
from shared import topology
from shared.contracts import Click
from shared.pull import Puller

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(Click).decode
ACTIVE = ("pending", "running")


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


def _row(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "status": r["state"],
        "state": r["state"],
        "from": r["from_ts"].isoformat(),
        "to": r["to_ts"].isoformat(),
        "processed": r["processed"],
        "total": r["total"],
        "error": r["error"],
        "created_at": r["created_at"].isoformat(),
        "updated_at": r["updated_at"].isoformat(),
    }


class Backfills:
    def __init__(self, nc: Client, store: AnalyticsStore, batch: int) -> None:
        self._nc = nc
        self._store = store
        self._pool = store.pool
        self._batch = batch
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def create(self, start: datetime, end: datetime) -> dict[str, Any]:
        start_seq = await first_seq_at(self._nc, start)
        end_seq = await first_seq_at(self._nc, end) - 1
        total = max(end_seq - start_seq + 1, 0)
        row = await self._pool.fetchrow(
            "INSERT INTO backfills (id, from_ts, to_ts, state, start_seq, end_seq, next_seq, "
            "total) VALUES ($1, $2, $3, $4, $5, $6, $5, $7) RETURNING *",
            secrets.token_hex(8),
            start,
            end,
            "pending" if total else "done",
            start_seq,
            end_seq,
            total,
        )
        assert row is not None
        if total:
            self._spawn(row["id"])
        return _row(row)

    async def get(self, backfill_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow("SELECT * FROM backfills WHERE id = $1", backfill_id)
        return _row(row) if row else None

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT * FROM backfills ORDER BY created_at DESC")
        return [_row(r) for r in rows]

    async def cancel(self, backfill_id: str) -> dict[str, Any] | None:
        await self._pool.execute(
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
        js = self._nc.jetstream()
        name = f"backfill-{backfill_id}"
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(topology.CLICKS, name)  # left by a killed run
        if next_seq <= end_seq:
            await js.add_consumer(
                topology.CLICKS,
                ConsumerConfig(
                    name=name,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=next_seq,
                    ack_policy=AckPolicy.NONE,
                    filter_subject="clicks.>",
                    inactive_threshold=300,
                    mem_storage=True,
                ),
            )
            puller = Puller(self._nc, topology.CLICKS, name)
            await puller.start()
            try:
                while next_seq <= end_seq:
                    msgs = await puller.fetch(min(self._batch, end_seq - next_seq + 1), 5.0)
                    if not msgs:
                        # Messages in the range were removed by the stream's
                        # limits: nothing more to replay.
                        break
                    clicks, last = [], next_seq - 1
                    for msg in msgs:
                        seq = msg.metadata.sequence.stream
                        if seq > end_seq:
                            break
                        last = seq
                        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                            clicks.append(_decode(msg.data))
                    if clicks:
                        await self._store.record(clicks)
                    next_seq = last + 1
                    await self._pool.execute(
                        "UPDATE backfills SET next_seq = $2, processed = $2 - start_seq, "
                        "updated_at = now() WHERE id = $1",
                        backfill_id,
                        next_seq,
                    )
            finally:
                await puller.stop()
                with contextlib.suppress(Exception):
                    await js.delete_consumer(topology.CLICKS, name)
        await self._pool.execute(
            "UPDATE backfills SET state = 'done', processed = total, updated_at = now() "
            "WHERE id = $1 AND state = 'running'",
            backfill_id,
        )
