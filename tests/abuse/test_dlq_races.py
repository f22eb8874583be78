"""Dead-letter calls raced and repeated, as two operators (or one double
click) do: no 5xx, each letter handled exactly once, a replay-all bounded to
the letters present when it started, and a ``links.*`` letter replayed by the
cache-refresher from the database, with nothing published on ``links.*``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client

from services.cache_refresher.reconcile import truth
from shared import db
from shared.contracts import Click, LinkEntry, encode
from shared.jetstream import dlq, linkcache, topology
from tests.harness import count, eventually, running
from tests.integration.test_analytics import human
from tests.integration.test_operations import dead_letter_a_click

PROBLEM = "application/problem+json"


async def stream_messages(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.messages)


async def letters(nc: Client, consumer: str | None = None) -> list[dlq.DeadLetter]:
    return await dlq.list_(nc.jetstream(), consumer, limit=1000)


def no_server_error(responses: list[httpx.Response]) -> None:
    bad = [(r.request.method, r.request.url.path, r.status_code, r.text) for r in responses]
    assert [b for b in bad if b[2] >= 500] == []
    for r in responses:
        if r.status_code == 404:
            assert r.headers["content-type"].startswith(PROBLEM), r.text


async def test_racing_replays_and_discards_handle_each_letter_once(
    analytics: httpx.AsyncClient, nc: Client, recorder: None, db_url: str
) -> None:
    clicks = [human(f"race{i}") for i in range(8)]
    for c in clicks:
        await dead_letter_a_click(nc, c)
    held = await letters(nc)
    assert len(held) == 8
    seq_of = {msgspec.json.decode(x.data, type=Click).id: x.seq for x in held}

    # Per letter: two replays and a discard; and two replay-alls beside them.
    calls: list[tuple[str, int | None]] = []
    for letter_seq in seq_of.values():
        calls += [("replay", letter_seq), ("discard", letter_seq), ("replay", letter_seq)]
    calls += [("replay-all", None), ("replay-all", None)]

    async def call(kind: str, seq: int | None) -> httpx.Response:
        if kind == "replay":
            return await analytics.post(f"/api/dlq/{seq}/replay")
        if kind == "discard":
            return await analytics.delete(f"/api/dlq/{seq}")
        return await analytics.post("/api/dlq/replay")

    responses = await asyncio.gather(*(call(k, s) for k, s in calls))
    assert len(responses) >= 20
    no_server_error(responses)

    replayed_one: set[int] = set()
    discarded: set[int] = set()
    replayed_by_all = 0
    for (kind, seq), r in zip(calls, responses, strict=True):
        if kind == "replay-all":
            assert r.status_code == 200, r.text
            replayed_by_all += r.json()["replayed"]
        elif r.status_code != 404:
            assert r.status_code == (200 if kind == "replay" else 204), r.text
            assert seq is not None
            target = replayed_one if kind == "replay" else discarded
            assert seq not in replayed_one | discarded, f"letter {seq} handled twice"
            target.add(seq)
    # Every letter handled once, by one of the calls.
    assert len(replayed_one) + len(discarded) + replayed_by_all == len(clicks)
    assert await letters(nc) == []
    # What was replayed reached CLICKS once each; what was discarded, never.
    replayed = len(clicks) - len(discarded)
    assert await stream_messages(nc, topology.CLICKS) == replayed

    async def recorded() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks") == replayed

    await eventually(recorded, what=f"{replayed} replayed clicks recorded")
    for click_id, seq in seq_of.items():
        rows = await count(db_url, "SELECT count(*) FROM clicks WHERE id = $1", click_id)
        assert rows == (0 if seq in discarded else 1), (seq, click_id)
    # And repeating any call now: 404, never a 5xx.
    again = await asyncio.gather(*(call(k, s) for k, s in calls if k != "replay-all"))
    no_server_error(again)
    assert {r.status_code for r in again} == {404}


async def test_replay_all_is_bounded_to_the_letters_present_when_it_started(
    analytics: httpx.AsyncClient, nc: Client, recorder: None
) -> None:
    """Undecodable clicks: each replayed one is dead-lettered again (by both
    consumers) while the replay-all still runs. It replays each letter it
    found once and ends; each comes back to the DLQ once."""
    n = 40
    for i in range(n):
        await nc.jetstream().publish(
            "dlq.CLICKS.click-recorder",
            f"not json {i}".encode(),
            headers={
                "Nats-Msg-Id": f"garbage.{i}",
                "Linkflow-Original-Subject": "clicks.garbage",
                "Linkflow-Stream-Seq": str(i + 1),
                "Linkflow-Attempts": "1",
                "Linkflow-Error": "DecodeError: not json",
            },
        )
    last = (await nc.jetstream().stream_info(topology.DLQ)).state.last_seq
    r = await analytics.post("/api/dlq/replay", params={"consumer": "click-recorder"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"replayed": n, "skipped": 0}
    # Each replayed once: n messages on CLICKS, no more.
    assert await stream_messages(nc, topology.CLICKS) == n

    async def back() -> list[dlq.DeadLetter] | None:
        held = await letters(nc, "click-recorder")
        return held if len(held) == n else None

    returned = await eventually(back, 30, f"{n} letters back from the recorder")
    assert all(x.seq > last for x in returned)
    assert Counter(x.data for x in returned) == Counter(f"not json {i}".encode() for i in range(n))
    # The next replay-all takes the returned ones, once each again.
    again = await analytics.post(
        "/api/dlq/replay", params={"consumer": "click-recorder"}, timeout=60
    )
    assert again.json() == {"replayed": n, "skipped": 0}
    assert await stream_messages(nc, topology.CLICKS) == 2 * n


@contextlib.asynccontextmanager
async def refresher(nc: Client, db_url: str) -> AsyncIterator[None]:
    """The cache-refresher's answer to refresh requests, in-process."""
    # Imported here, like in the test below, so that the other tests of this
    # file run (and fail on their merits) on a tree from before it existed.
    from services.cache_refresher import refresh

    pool = await db.create_pool(db_url, max_size=2)
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    try:
        async with running(refresh.responder(nc, kv, pool)):
            await nc.flush()  # its subscription is in place before any request
            yield
    finally:
        await pool.close()


async def dead_letter_a_link_event(nc: Client, subject: str, event: dict[str, Any]) -> int:
    """A links.* event in the DLQ as the cache-refresher would have left it."""
    ack = await nc.jetstream().publish(
        "dlq.LINKS.cache-refresher",
        msgspec.json.encode(event),
        headers={
            "Nats-Msg-Id": f"LINKS.cache-refresher.{event['code']}.{event['version']}",
            "Linkflow-Original-Subject": subject,
            "Linkflow-Stream-Seq": "1",
            "Linkflow-Attempts": "3",
            "Linkflow-Error": "Unavailable: KV unavailable",
        },
    )
    return int(ack.seq)


async def kv_entry(nc: Client, code: str) -> LinkEntry | None:
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    return (await linkcache.read(kv, code))[0]


async def test_a_links_letter_is_replayed_by_the_cache_refresher_from_the_database(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    for code in ("kept", "gone"):
        r = await gateway.post("/api/links", json={"url": f"https://{code}.example/", "code": code})
        assert r.status_code == 201, r.text
    assert (await gateway.patch("/api/links/kept", json={"url": "https://b.example/"})).is_success
    assert (await gateway.delete("/api/links/gone")).status_code == 204
    pool = await db.create_pool(db_url, max_size=1)
    try:
        want = await truth(pool)
    finally:
        await pool.close()
    assert want["kept"].version == 2
    assert want["gone"].deleted
    # KV behind the database, as if the cache-refresher's events had been
    # dead-lettered: both entries back at version 1.
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    for code in ("kept", "gone"):
        await kv.put(code, encode(LinkEntry(url=f"https://{code}.example/", version=1)))
    kept = await dead_letter_a_link_event(
        nc, "links.updated", {"code": "kept", "url": "https://b.example/", "version": 2}
    )
    gone = await dead_letter_a_link_event(
        nc, "links.deleted", {"code": "gone", "version": 2, "deleted_at": "2026-01-01T00:00:00Z"}
    )
    links_before = (await nc.jetstream().stream_info(topology.LINKS)).state.last_seq

    # No cache-refresher answering: 503, and the letter stays.
    r = await analytics.post(f"/api/dlq/{kept}/replay")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert len(await letters(nc, "cache-refresher")) == 2

    async with refresher(nc, db_url):
        # Five racing replays of one letter and a replay-all: one of them
        # handles each letter, the rest are 404s.
        responses = await asyncio.gather(
            *(analytics.post(f"/api/dlq/{kept}/replay") for _ in range(5)),
            analytics.post("/api/dlq/replay", params={"consumer": "cache-refresher"}),
            analytics.post(f"/api/dlq/{gone}/replay"),
        )
        no_server_error(responses)
        singles = [r.status_code for r in responses[:5]] + [responses[6].status_code]
        by_all = responses[5].json()["replayed"]
        assert singles.count(200) + by_all == 2, (singles, by_all)
        for r in responses:
            if r.status_code == 200 and "stream_seq" in r.json():
                assert r.json()["stream_seq"] is None  # nothing was published

    assert await kv_entry(nc, "kept") == want["kept"]
    assert await kv_entry(nc, "gone") == want["gone"]
    assert await letters(nc) == []
    # Nothing went to LINKS: the replay published no links.* event.
    assert (await nc.jetstream().stream_info(topology.LINKS)).state.last_seq == links_before


async def test_a_refresh_never_moves_a_link_backward(nc: Client, db_url: str) -> None:
    """KV holding a newer version than the database (a later event applied
    before the row is read): the refresh leaves it."""
    from services.cache_refresher import refresh

    conn = await db.create_pool(db_url, max_size=1)
    try:
        await conn.execute(
            "INSERT INTO links (code, url, version) VALUES ('newer', 'https://old.example/', 1)"
        )
        kv = await nc.jetstream().key_value(topology.KV_LINKS)
        ahead = LinkEntry(url="https://new.example/", version=3)
        await kv.put("newer", encode(ahead))
        answer = await refresh.refresh(kv, conn, None, "newer")
        assert answer.version == 3
        assert await kv_entry(nc, "newer") == ahead
        assert (await refresh.refresh(kv, conn, None, "nosuch")).version is None
        assert await kv_entry(nc, "nosuch") is None
    finally:
        await conn.close()


@pytest.mark.parametrize("payload", [b"not json", b'{"version": 2}'])
async def test_a_links_letter_naming_no_link_is_a_422_and_stays(
    analytics: httpx.AsyncClient, nc: Client, payload: bytes
) -> None:
    ack = await nc.jetstream().publish(
        "dlq.LINKS.cache-refresher",
        payload,
        headers={"Linkflow-Original-Subject": "links.updated", "Nats-Msg-Id": "bad-link"},
    )
    r = await analytics.post(f"/api/dlq/{ack.seq}/replay")
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert [x.seq for x in await letters(nc)] == [ack.seq]
    assert (await analytics.delete(f"/api/dlq/{ack.seq}")).status_code == 204


async def test_a_replay_that_cannot_publish_puts_the_letter_back(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    """The letter is taken from the DLQ before it is republished (so racing
    calls handle it once); a publish that fails puts it back: a 503, never
    a lost letter."""
    js = nc.jetstream()
    # A letter whose original subject is no click's is never republished
    # (whoever wrote the letter chose that header): 422, and it stays.
    odd = await js.publish(
        "dlq.CLICKS.click-recorder",
        b'{"id": "y"}',
        headers={"Linkflow-Original-Subject": "links.updated", "Nats-Msg-Id": "odd"},
    )
    assert (await analytics.post(f"/api/dlq/{odd.seq}/replay")).status_code == 422
    await analytics.delete(f"/api/dlq/{odd.seq}")
    ack = await js.publish(
        "dlq.CLICKS.click-recorder",
        b'{"id": "x"}',
        headers={"Linkflow-Original-Subject": "clicks.lost", "Nats-Msg-Id": "lost-not"},
    )
    # With no stream to take it, the republish fails.
    await js.delete_stream(topology.CLICKS)
    r = await analytics.post(f"/api/dlq/{ack.seq}/replay")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    held = await letters(nc)
    assert [(x.data, x.headers["Linkflow-Original-Subject"]) for x in held] == [
        (b'{"id": "x"}', "clicks.lost")
    ]
    assert held[0].seq > ack.seq
    assert (await analytics.post(f"/api/dlq/{ack.seq}/replay")).status_code == 404


async def test_an_advisory_letter_is_not_replayed_but_discarded(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    ack = await nc.jetstream().publish(
        "dlq.ADVISORIES.click-recorder-max-deliveries",
        b"{}",
        headers={"Linkflow-Original-Subject": f"{topology.MAX_DELIVERIES}.CLICKS.click-recorder"},
    )
    assert (await analytics.post(f"/api/dlq/{ack.seq}/replay")).status_code == 422
    r = await analytics.post("/api/dlq/replay")
    assert r.json() == {"replayed": 0, "skipped": 1}
    assert (await analytics.delete(f"/api/dlq/{ack.seq}")).status_code == 204
