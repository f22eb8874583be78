"""The click-recorder: duplicates, garbage and a database outage, counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.link.clicks import click_id
from shared import db
from shared.cli.servers import PostgresServer
from shared.contracts import Click, encode, now
from shared.jetstream import topology
from shared.jetstream.worker import Worker, json_payload
from tests.conftest import TEST_WORKER
from tests.harness import count, eventually, running
from tests.servers import migrate_main


def click(code: str = "rec", cid: str | None = None) -> Click:
    return Click(id=cid or click_id(), code=code, ts=now(), user_agent="Mozilla/5.0")


async def publish(js: JetStreamContext, c: Click, msg_id: str | None = None) -> None:
    await js.publish(
        f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": msg_id or c.id, "X-Request-Id": c.id}
    )


async def rows(url: str) -> int:
    return await count(url, "SELECT count(*) FROM clicks")


async def dlq_depth(js: JetStreamContext) -> int:
    return int((await js.stream_info(topology.DLQ)).state.messages)


async def test_same_click_twice_is_one_row(nc: Client, recorder: None, db_url: str) -> None:
    js = nc.jetstream()
    c = click()
    await publish(js, c)
    # A second copy past the server's duplicate window (a new Nats-Msg-Id),
    # as a replayed spool or DLQ replay would send it: the primary key absorbs it.
    await publish(js, c, msg_id=f"{c.id}-again")
    later = click()
    await publish(js, later)

    async def both() -> bool:
        return await rows(db_url) >= 2

    await eventually(both, what="two rows")
    info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)

    async def all_acked() -> bool:
        info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
        last = (await js.stream_info(topology.CLICKS)).state.last_seq
        return info.ack_floor.stream_seq == last

    await eventually(all_acked, what="all three messages acked")
    assert info.num_pending == 0
    assert await rows(db_url) == 2
    assert await dlq_depth(js) == 0


async def test_garbage_goes_to_dlq_and_next_click_is_recorded(
    nc: Client, recorder: None, db_url: str
) -> None:
    js = nc.jetstream()
    await js.publish("clicks.x", b"\x00not json", headers={"Nats-Msg-Id": "garbage-1"})
    await js.publish("clicks.yyy", b'{"id": "1", "code": "yyy"}')  # valid JSON, missing ts
    good = click("good")
    await publish(js, good)

    await eventually(lambda: rows(db_url), what="the valid click")

    async def two_dead() -> bool:
        return await dlq_depth(js) == 2

    await eventually(two_dead, what="two DLQ entries")
    sub = await js.pull_subscribe("dlq.CLICKS.click-recorder", durable=None, stream="DLQ")
    dead = await sub.fetch(2, timeout=5)
    first = dead[0]
    assert first.data == b"\x00not json"  # the payload, unchanged
    headers = first.headers or {}
    assert headers["Linkflow-Original-Subject"] == "clicks.x"
    first_seq = (await js.stream_info(topology.CLICKS)).state.first_seq
    assert headers["Linkflow-Stream-Seq"] == str(first_seq)
    assert headers["Linkflow-Attempts"] == "1"
    assert headers["Linkflow-Error"].startswith("PermanentError: invalid payload")
    assert headers["Linkflow-Original-Msg-Id"] == "garbage-1"
    # <consumer>:<stream seq>, as a worker in any language writes it.
    assert headers["Nats-Msg-Id"] == f"click-recorder:{first_seq}"
    assert headers["Linkflow-Failed-At"].endswith("Z")
    assert headers["Linkflow-First-Failed-At"].endswith("Z")
    second = dead[1].headers or {}
    assert "ts" in second["Linkflow-Error"]
    assert await count(db_url, "SELECT count(*) FROM clicks WHERE id = $1", good.id) == 1


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    pg = PostgresServer(tmp_path / "pg", durable=False).start()
    await migrate_main(pg.url("linkflow"))
    yield pg
    pg.stop()


async def test_database_outage_loses_nothing_and_dead_letters_nothing(
    nc: Client, own_pg: PostgresServer
) -> None:
    url = own_pg.url("linkflow")
    js = nc.jetstream()
    pool = await db.create_pool(url)
    worker = Worker(
        nc,
        topology.CLICK_RECORDER,
        TEST_WORKER,
        json_payload(Click),
        ClickRecorder(pool, Partitions(pool, 0)).handle,
    )
    sent: set[str] = set()

    async def send(n: int) -> None:
        for _ in range(n):
            c = click("outage")
            await publish(js, c)
            sent.add(c.id)

    async with running(worker.run):
        await send(100)

        async def first_hundred() -> bool:
            return await rows(url) == 100

        await eventually(first_hundred, what="clicks before the outage")
        own_pg.stop()
        await send(300)  # clicks keep flowing while the database is down
        # Several retry rounds pass (more than MAX_ATTEMPTS=3 worth of backoff).
        await asyncio.sleep(1.5)  # wait-ok: the outage's length is the point of the test
        own_pg.start()
        await send(100)

        async def everything() -> bool:
            return await rows(url) >= len(sent)

        await eventually(everything, 60, "every click after the database returned")
    await pool.close()
    conn = await asyncpg.connect(url)
    ids = {r["id"] for r in await conn.fetch("SELECT id FROM clicks")}
    await conn.close()
    assert ids == sent
    assert await dlq_depth(js) == 0


async def dead_letters(js: JetStreamContext, n: int) -> list[Msg]:
    async def all_there() -> bool:
        return await dlq_depth(js) >= n

    await eventually(all_there, what=f"{n} DLQ entries")
    sub = await js.pull_subscribe("dlq.CLICKS.click-recorder", durable=None, stream="DLQ")
    return await sub.fetch(n, timeout=5)


async def test_invalid_utf8_goes_to_dlq_at_once(nc: Client, recorder: None, db_url: str) -> None:
    js = nc.jetstream()
    bad = b'{"id":"u8","code":"utf","ts":"2026-11-22T10:00:00Z","user_agent":"\xff"}'
    await js.publish("clicks.utf", bad)
    good = click("good")
    await publish(js, good)

    [dead] = await dead_letters(js, 1)
    assert dead.data == bad
    headers = dead.headers or {}
    assert headers["Linkflow-Attempts"] == "1"
    assert headers["Linkflow-Error"].startswith("PermanentError: invalid payload")
    await eventually(lambda: rows(db_url), what="the valid click")
    assert await count(db_url, "SELECT count(*) FROM clicks WHERE id = $1", good.id) == 1


async def test_a_click_the_database_refuses_is_dead_lettered_alone(nc: Client, db_url: str) -> None:
    # What the contract cannot rule out, the database may still refuse: here
    # an operator's CHECK constraint. Only that click fails; the rest of its
    # batch is recorded at the first attempt.
    conn = await asyncpg.connect(db_url)
    await conn.execute("ALTER TABLE clicks ADD CONSTRAINT no_evil CHECK (code <> 'evil')")
    await conn.close()
    js = nc.jetstream()
    sent = [click() for _ in range(20)]
    evil = click("evil")
    for c in [*sent[:10], evil, *sent[10:]]:  # one batch: published before the worker starts
        await publish(js, c)
    pool = await db.create_pool(db_url)
    worker = Worker(
        nc,
        topology.CLICK_RECORDER,
        TEST_WORKER,
        json_payload(Click),
        ClickRecorder(pool, Partitions(pool, 0)).handle,
    )
    async with running(worker.run):
        [dead] = await dead_letters(js, 1)

        async def twenty() -> bool:
            return await rows(db_url) == 20

        await eventually(twenty, what="the twenty others")
    await pool.close()
    assert msgspec.json.decode(dead.data, type=Click).id == evil.id
    headers = dead.headers or {}
    assert headers["Linkflow-Attempts"] == "1"
    assert "no_evil" in headers["Linkflow-Error"]
    assert headers["Linkflow-Error"].startswith("PermanentError")
    assert await dlq_depth(js) == 1


@pytest.mark.parametrize("field", ["id", "user_agent", "referrer", "ip", "request_id"])
async def test_a_nul_character_is_an_invalid_click(
    nc: Client, recorder: None, db_url: str, field: str
) -> None:
    # PostgreSQL text cannot hold U+0000; such a click is malformed, not a
    # reason to hold up its batch.
    js = nc.jetstream()
    fields = {"id": "nul-1", "code": "nul", "ts": "2026-11-22T10:00:00Z", field: "a\u0000b"}
    await js.publish("clicks.nul", msgspec.json.encode(fields))
    good = click("good")
    await publish(js, good)

    [dead] = await dead_letters(js, 1)
    headers = dead.headers or {}
    assert headers["Linkflow-Attempts"] == "1"
    assert headers["Linkflow-Error"].startswith("PermanentError: invalid payload")
    assert "NUL" in headers["Linkflow-Error"]
    await eventually(lambda: rows(db_url), what="the valid click")
    assert await rows(db_url) == 1


async def test_every_field_is_stored_as_sent(nc: Client, recorder: None, db_url: str) -> None:
    # The batch reaches PostgreSQL as JSON text: a time keeps its instant
    # (to the millisecond of the wire format), text its non-ASCII, quotes
    # and backslashes.
    js = nc.jetstream()
    cest = timezone(timedelta(hours=2))
    sent = [
        Click(
            id=click_id(),
            code="fields",
            ts=datetime(2026, 11, 22, 14, 5, 40, 123000, tzinfo=cest),
            referrer='https://news.example/ü?q="a\\\\b"',
            user_agent="Mozilla/5.0 (Linux; Android 14) 😀",
            ip="2001:db8::",
            country="DE",
            is_bot=True,
            request_id="req-1",
            rule=3,
            visitor="0123456789abcdef0123456789abcdef",
        ),
        Click(id=click_id(), code="fields", ts=now()),  # every optional field absent
    ]
    for c in sent:
        await publish(js, c)

    async def both() -> bool:
        return await rows(db_url) == 2

    await eventually(both, what="two rows")
    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, code, ts, referrer, user_agent, ip, country, is_bot, request_id,"
                " rule, visitor FROM clicks"
            )
        }
    finally:
        await conn.close()
    for c in sent:
        assert tuple(stored[c.id]) == (
            c.id, c.code, c.ts, c.referrer, c.user_agent, c.ip, c.country, c.is_bot,
            c.request_id, c.rule, c.visitor,
        )  # fmt: skip
