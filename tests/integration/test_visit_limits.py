"""Visit limits (SPEC: max_visits): counted behind the bus by analytics,
enforced by every gateway from its watch of KV ``link_visits``, with a
bounded overshoot."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from services.analytics.limits import VisitLimits
from services.analytics.store import AnalyticsStore
from services.link.app import build
from services.link.settings import Settings
from shared import db
from shared.contracts import Click, VisitCount, encode, now
from shared.geo import Countries
from shared.jetstream import topology
from shared.settings import Common
from tests.harness import bearer, burst, count, eventually, serve
from tests.integration.conftest import PUBLIC_URL, CacheRefresher, analytics_service
from tests.integration.test_api import assert_problem
from tests.servers import Servers

HUMAN = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
BOT = {"user-agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"}


@contextlib.asynccontextmanager
async def gateways(
    servers: Servers, db_url: str, tmp_path: Path, admin_key: str, n: int
) -> AsyncIterator[list[httpx.AsyncClient]]:
    common = Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(n):
            settings = Settings(common=common, spool_dir=str(tmp_path / f"spool{i}"))
            url = await stack.enter_async_context(serve(build(settings)))
            limits = httpx.Limits(max_connections=200)
            client = httpx.AsyncClient(
                base_url=url, headers=bearer(admin_key), limits=limits, timeout=30
            )
            clients.append(await stack.enter_async_context(client))
        yield clients


async def storm(clients: list[httpx.AsyncClient], code: str, total: int) -> Counter[int]:
    """``total`` clicks at once, spread over the gateways; their statuses."""
    return await burst([str(c.base_url).rstrip("/") for c in clients], f"/{code}", total, HUMAN)


async def counted(db_url: str, code: str) -> int:
    return await count(
        db_url, "SELECT coalesce(sum(visits), 0) FROM link_visits WHERE code = $1", code
    )


@pytest.fixture
async def one(
    servers: Servers,
    db_url: str,
    tmp_path: Path,
    admin_key: str,
    cache_refresher: CacheRefresher,
    analytics: httpx.AsyncClient,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One gateway, with the cache-refresher (link changes reach KV) and
    analytics (visits are counted) running."""
    async with gateways(servers, db_url, tmp_path, admin_key, 1) as clients:
        yield clients


@pytest.fixture
async def two(
    servers: Servers,
    db_url: str,
    tmp_path: Path,
    admin_key: str,
    cache_refresher: CacheRefresher,
    analytics: httpx.AsyncClient,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two gateways, with the same services behind them."""
    async with gateways(servers, db_url, tmp_path, admin_key, 2) as clients:
        yield clients


async def answers(
    client: httpx.AsyncClient, code: str, status: int, headers: dict[str, str] = HUMAN
) -> None:
    async def it() -> bool:
        return (await client.get(f"/{code}", headers=headers)).status_code == status

    await eventually(it, 10, f"/{code} to answer {status}")


@pytest.mark.parametrize("value", [0, -1, True, "10", 1.5, 2**31])
async def test_an_invalid_limit_is_refused(
    servers: Servers, db_url: str, tmp_path: Path, admin_key: str, value: Any
) -> None:
    async with gateways(servers, db_url, tmp_path, admin_key, 1) as (gateway,):
        r = await gateway.post(
            "/api/links", json={"url": "https://example.com/", "max_visits": value}
        )
        assert_problem(r, 422, "max_visits")
        assert (await gateway.get("/api/links")).json()["items"] == []


async def test_one_gateway_lets_exactly_the_limit_through_1000_at_once(
    one: list[httpx.AsyncClient],
    db_url: str,
) -> None:
    clients = one
    gateway = clients[0]
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/", "code": "limited", "max_visits": 100}
    )
    assert r.status_code == 201, r.text
    assert r.json()["max_visits"] == 100
    statuses = await storm(clients, "limited", 1000)
    # Overshoot 0: the gateway takes a visit before it publishes the click.
    assert statuses == {302: 100, 410: 900}, statuses
    r = await gateway.get("/limited", headers=HUMAN)
    assert r.status_code == 410
    assert "visit limit" in r.json()["detail"]

    async def all_counted() -> bool:
        return await counted(db_url, "limited") == 100

    await eventually(all_counted, 10, "analytics to count every redirected click")


async def test_two_gateways_overshoot_by_less_than_their_own_counts(
    two: list[httpx.AsyncClient],
    db_url: str,
) -> None:
    """The bound: each gateway lets at most max_visits through on its own
    count, so N gateways overshoot by less than (N - 1) x max_visits, and by
    what the counter had not yet counted in practice. Measured and printed."""
    clients = two
    r = await clients[0].post(
        "/api/links", json={"url": "https://example.com/", "code": "shared", "max_visits": 100}
    )
    assert r.status_code == 201, r.text
    for c in clients:
        await answers(c, "shared", 302, BOT)  # known to both; a bot takes no visit
    statuses = await storm(clients, "shared", 1000)
    redirected = statuses[302]
    print(f"two gateways, 1000 clicks at once, max_visits 100: {redirected} redirected")
    assert set(statuses) <= {302, 410}, statuses
    assert 100 <= redirected <= 200, statuses

    async def all_counted() -> bool:
        return await counted(db_url, "shared") == redirected

    # Nothing lost, nothing doubled: the count is exactly what was redirected.
    await eventually(all_counted, 10, "analytics to count every redirected click")
    for c in clients:
        await answers(c, "shared", 410)
        await answers(c, "shared", 410, BOT)


async def test_raising_the_limit_reopens_the_link_and_bots_take_no_visit(
    one: list[httpx.AsyncClient],
    db_url: str,
) -> None:
    clients = one
    gateway = clients[0]
    await gateway.post(
        "/api/links", json={"url": "https://example.com/", "code": "reopen", "max_visits": 3}
    )
    for _ in range(5):
        assert (await gateway.head("/reopen", headers=HUMAN)).status_code == 302  # HEAD: a bot
        assert (await gateway.get("/reopen", headers=BOT)).status_code == 302
    assert await storm(clients, "reopen", 5) == {302: 3, 410: 2}
    r = await gateway.patch("/api/links/reopen", json={"max_visits": 5})
    assert r.status_code == 200, r.text
    await answers(gateway, "reopen", 302)  # the 4th visit
    assert await storm(clients, "reopen", 3) == {302: 1, 410: 2}

    async def all_counted() -> bool:
        return await counted(db_url, "reopen") == 5

    await eventually(all_counted, 10, "five human visits counted, no bot")
    # No limit, no count: the link is open for good.
    r = await gateway.patch("/api/links/reopen", json={"max_visits": None})
    assert r.status_code == 200, r.text
    await answers(gateway, "reopen", 302)
    assert await storm(clients, "reopen", 10) == {302: 10}


async def test_a_code_taken_again_starts_from_zero(
    one: list[httpx.AsyncClient],
    db_url: str,
) -> None:
    clients = one
    gateway = clients[0]
    link = {"url": "https://example.com/", "code": "again", "max_visits": 2}
    assert (await gateway.post("/api/links", json=link)).status_code == 201
    assert await storm(clients, "again", 3) == {302: 2, 410: 1}

    async def both_counted() -> bool:
        return await counted(db_url, "again") == 2

    await eventually(both_counted, 10, "both visits counted")
    assert (await gateway.delete("/api/links/again")).status_code == 204
    await answers(gateway, "again", 404)
    assert (await gateway.post("/api/links", json=link)).status_code == 201
    await answers(gateway, "again", 302)
    assert (await gateway.get("/again", headers=HUMAN)).status_code == 302
    await answers(gateway, "again", 410)


async def test_a_lost_count_is_put_back(
    one: list[httpx.AsyncClient],
    nc: Client,
    db_url: str,
) -> None:
    """An exhausted link gets no more clicks to count: if KV loses its count,
    the repair pass (analytics runs it every minute) must put it back."""
    clients = one
    gateway = clients[0]
    await gateway.post(
        "/api/links", json={"url": "https://example.com/", "code": "lost", "max_visits": 1}
    )
    assert await storm(clients, "lost", 2) == {302: 1, 410: 1}
    kv = await nc.jetstream().key_value(topology.KV_VISITS)

    async def held() -> VisitCount | None:
        try:
            return msgspec.json.decode((await kv.get("lost")).value or b"", type=VisitCount)
        except KeyNotFoundError:
            return None

    async def in_kv() -> bool:
        count = await held()
        return count is not None and count.visits == 1

    await eventually(in_kv, 10, "the count in KV")
    await kv.delete("lost")  # KV buckets take no rollup, so no kv.purge
    assert await held() is None
    js = nc.jetstream()
    pool = await db.create_pool(db_url, max_size=1)
    limits = VisitLimits(
        await js.key_value(topology.KV_LINKS), kv, AnalyticsStore(pool, Countries())
    )
    limits.start()
    try:
        await asyncio.wait_for(limits.synced.wait(), 10)
        assert await limits.repair() == 1
        assert await limits.repair() == 0  # in step now
    finally:
        await limits.stop()
        await pool.close()
    assert await in_kv()
    await answers(gateway, "lost", 410)


async def test_a_redelivered_click_is_counted_once(
    one: list[httpx.AsyncClient],
    nc: Client,
    db_url: str,
) -> None:
    """The same click published twice past the duplicate window (new
    Nats-Msg-Id) reaches analytics twice; its ledger counts it once."""
    (gateway,) = one
    await gateway.post(
        "/api/links", json={"url": "https://example.com/", "code": "twice", "max_visits": 10}
    )
    # A click made after the link (its time counts: SPEC's generations).
    payload = encode(Click(id="0001", code="twice", ts=now(), request_id="r"))
    js = nc.jetstream()
    for msg_id in ("a", "b"):
        await js.publish("clicks.twice", payload, headers={"Nats-Msg-Id": msg_id})

    async def drained() -> bool:
        i = await js.consumer_info(topology.CLICKS, topology.ANALYTICS_CLICKS.name)
        return i.num_pending == 0 and i.num_ack_pending == 0

    await eventually(drained, 10, "analytics to take both copies")
    assert await counted(db_url, "twice") == 1
    assert await count(db_url, "SELECT count(*) FROM counted_clicks WHERE code = 'twice'") == 1


async def test_old_clicks_in_the_backlog_count_for_the_old_link_only(
    servers: Servers,
    nc: Client,
    db_url: str,
    tmp_path: Path,
    admin_key: str,
    cache_refresher: CacheRefresher,
) -> None:
    """Analytics behind (not running here): a code's clicks wait in CLICKS
    while the code is deleted and taken again. When analytics counts them,
    they are the old link's, not the new one's."""
    async with gateways(servers, db_url, tmp_path, admin_key, 1) as clients:
        gateway = clients[0]
        link = {"url": "https://example.com/", "code": "gen", "max_visits": 5}
        assert (await gateway.post("/api/links", json=link)).status_code == 201
        assert await storm(clients, "gen", 3) == {302: 3}
        last_click = time.time()
        assert (await gateway.delete("/api/links/gen")).status_code == 204
        await answers(gateway, "gen", 404)

        # The new link's created_at must be past the old clicks' times by more
        # than the second of slack allowed for the clocks.
        async def clear_of_the_slack() -> bool:
            return time.time() > last_click + 1.5

        await eventually(clear_of_the_slack, 5, "the clocks' slack to pass")
        assert (await gateway.post("/api/links", json=link)).status_code == 201
        await answers(gateway, "gen", 302)  # the new link's first visit
        js = nc.jetstream()
        async with analytics_service(servers, db_url, admin_key):

            async def drained() -> bool:
                i = await js.consumer_info(topology.CLICKS, topology.ANALYTICS_CLICKS.name)
                return i.num_pending == 0 and i.num_ack_pending == 0

            await eventually(drained, 10, "analytics to count the backlog")

            async def only_the_new_visit() -> bool:
                return await counted(db_url, "gen") == 1

            await eventually(only_the_new_visit, 5, "the new link's one visit, no old click")
            # The old link's clicks were counted (as clicks), not as visits.
            assert await count(db_url, "SELECT count(*) FROM counted_clicks") >= 4
