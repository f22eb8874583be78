"""Link changes reach every gateway; stale or reordered events never win."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from services.cache_refresher.reconcile import reconcile, reconciler
from services.link.app import build
from services.link.settings import Settings
from shared import db
from shared.contracts import LinkDeleted, LinkEntry, LinkUpdated, encode
from shared.jetstream import linkcache, topology
from shared.settings import Common
from tests.harness import bearer, eventually, serve
from tests.integration.conftest import PUBLIC_URL, CacheRefresher
from tests.servers import Servers


async def location(client: httpx.AsyncClient, code: str) -> str | int:
    r = await client.get(f"/{code}")
    return r.headers["location"] if r.status_code in (301, 302, 307, 308) else r.status_code


async def test_patch_reaches_every_gateway(
    servers: Servers,
    nc: Client,
    db_url: str,
    cache_refresher: CacheRefresher,
    tmp_path: Path,
    admin_key: str,
) -> None:
    common = Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(2):
            settings = Settings(common=common, spool_dir=str(tmp_path / f"spool{i}"))
            url = await stack.enter_async_context(serve(build(settings)))
            client = httpx.AsyncClient(base_url=url, headers=bearer(admin_key))
            clients.append(await stack.enter_async_context(client))
        one, two = clients
        r = await one.post("/api/links", json={"url": "https://example.com/v1", "code": "multi"})
        assert r.status_code == 201, r.text
        for c in clients:
            assert await location(c, "multi") == "https://example.com/v1"
        r = await two.patch("/api/links/multi", json={"url": "https://example.com/v2"})
        assert r.json()["version"] == 2

        for c in clients:

            async def moved(c: httpx.AsyncClient = c) -> bool:
                return await location(c, "multi") == "https://example.com/v2"

            await eventually(moved, 10, "every gateway to redirect to v2")
        await one.delete("/api/links/multi")
        for c in clients:

            async def gone(c: httpx.AsyncClient = c) -> bool:
                return await location(c, "multi") == 404

            await eventually(gone, 10, "every gateway to answer 404")


def updated(code: str, url: str, version: int) -> LinkUpdated:
    return LinkUpdated(
        code=code,
        url=url,
        redirect_type=302,
        expires_at=None,
        tags=[],
        version=version,
        updated_at=datetime.now(UTC),
    )


async def kv_entry(nc: Client, code: str) -> LinkEntry | None:
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    return (await linkcache.read(kv, code))[0]


async def settled(nc: Client) -> bool:
    info = await nc.jetstream().consumer_info(topology.LINKS, topology.CACHE_REFRESHER.name)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_old_update_after_newer_changes_nothing(
    nc: Client, cache_refresher: CacheRefresher
) -> None:
    js = nc.jetstream()
    await js.publish("links.updated", encode(updated("order", "https://new.example", 5)))
    await js.publish("links.updated", encode(updated("order", "https://old.example", 4)))
    # The same new event again (a redelivery) changes nothing either.
    await js.publish("links.updated", encode(updated("order", "https://new.example", 5)))
    await eventually(lambda: settled(nc), what="events applied")
    entry = await kv_entry(nc, "order")
    assert entry is not None
    assert (entry.url, entry.version) == ("https://new.example", 5)


async def test_stale_update_never_resurrects_a_deleted_link(
    nc: Client, cache_refresher: CacheRefresher
) -> None:
    js = nc.jetstream()
    await js.publish("links.updated", encode(updated("zombie", "https://a.example", 2)))
    await js.publish(
        "links.deleted", encode(LinkDeleted(code="zombie", version=3, deleted_at=datetime.now(UTC)))
    )
    await js.publish("links.updated", encode(updated("zombie", "https://a.example", 2)))
    await eventually(lambda: settled(nc), what="events applied")
    entry = await kv_entry(nc, "zombie")
    assert entry is not None
    assert entry.deleted
    assert entry.version == 3


async def test_change_made_while_refresher_is_down_arrives(
    gateway: httpx.AsyncClient, nc: Client, cache_refresher: CacheRefresher
) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com/before", "code": "down"})
    await cache_refresher.stop()
    await gateway.patch("/api/links/down", json={"url": "https://example.com/after"})
    assert await location(gateway, "down") == "https://example.com/before"
    await cache_refresher.start()

    async def arrived() -> bool:
        return await location(gateway, "down") == "https://example.com/after"

    await eventually(arrived, 10, "the change made while the refresher was down")


@pytest.mark.parametrize("corrupt", [b"{not json", b'{"url": "\xff"}'])
async def test_reconciliation_repairs_drift(
    gateway: httpx.AsyncClient, nc: Client, db_url: str, corrupt: bytes
) -> None:
    for code in ("corrupt", "missing", "stale", "gone"):
        r = await gateway.post(
            "/api/links", json={"url": f"https://example.com/{code}", "code": code}
        )
        assert r.status_code == 201
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    await kv.put("corrupt", corrupt)  # the gateway's watch must survive it too
    await kv.delete("missing")
    await kv.put("stale", encode(LinkEntry(url="https://example.com/ancient", version=1)))
    await kv.put("orphan", encode(LinkEntry(url="https://example.com/orphan", version=1)))
    conn = await asyncpg.connect(db_url)
    # Changed in the database without an event (a restore, a manual fix).
    await conn.execute(
        "UPDATE links SET url = 'https://example.com/fixed', version = 4 WHERE code = 'stale'"
    )
    await conn.execute("UPDATE links SET deleted_at = now(), version = 2 WHERE code = 'gone'")
    await conn.close()

    pool = await db.create_pool(db_url)
    try:
        repairs = await reconcile(kv, pool)
        assert repairs == {"corrupt": 1, "missing": 1, "stale": 2, "orphaned": 1}
        assert await reconcile(kv, pool) == {}
    finally:
        await pool.close()
    assert await location(gateway, "corrupt") == "https://example.com/corrupt"
    assert await location(gateway, "missing") == "https://example.com/missing"

    async def repaired(code: str, want: str | int) -> bool:
        return await location(gateway, code) == want

    await eventually(lambda: repaired("stale", "https://example.com/fixed"), what="stale fixed")
    await eventually(lambda: repaired("gone", 404), what="deleted link tombstoned")
    await eventually(lambda: repaired("orphan", 404), what="orphan removed")


async def test_reconciliation_loop_repairs_on_its_own(
    gateway: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com/loop", "code": "loop"})
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    pool = await db.create_pool(db_url)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler(kv, pool, 0.2)(stop))
    try:
        await kv.put("loop", encode(LinkEntry(url="https://evil.example", version=9)))

        async def repaired() -> bool:
            entry = await kv_entry(nc, "loop")
            return entry is not None and entry.url == "https://example.com/loop"

        await eventually(repaired, 10, "the loop to repair the entry")
    finally:
        stop.set()
        await task
        await pool.close()


async def test_links_created_is_kept_and_passed_over(
    gateway: httpx.AsyncClient, nc: Client, cache_refresher: CacheRefresher
) -> None:
    """LINKS keeps links.created for durable readers (the webhooks
    service); the cache-refresher takes it with nothing to do: acked, not
    dead-lettered."""
    r = await gateway.post("/api/links", json={"url": "https://example.com/", "code": "kept"})
    assert r.status_code == 201, r.text
    js = nc.jetstream()

    async def stored() -> bool:
        # A core publish: the stream has it a moment after the API answered.
        with contextlib.suppress(NotFoundError):
            last = await js.get_last_msg(topology.LINKS, "links.created")
            return b'"code":"kept"' in (last.data or b"")
        return False

    await eventually(stored, 10, "LINKS to keep links.created")

    async def taken() -> bool:
        info = await js.consumer_info(topology.LINKS, topology.CACHE_REFRESHER.name)
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0

    await eventually(taken, 10, "the cache-refresher to take links.created")
    assert (await js.stream_info(topology.DLQ)).state.messages == 0
