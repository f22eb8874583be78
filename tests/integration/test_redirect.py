"""Create → redirect → exactly one click row, through real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest
from nats.aio.client import Client

from services.cache_refresher.reconcile import reconcile
from shared.contracts import Click, LinkCreated, LinkDeleted, LinkUpdated
from shared.jetstream import topology
from tests.harness import count, eventually


async def clicks_for(db_url: str, code: str) -> int:
    return await count(db_url, "SELECT count(*) FROM clicks WHERE code = $1", code)


async def test_create_redirect_records_click_once(
    gateway: httpx.AsyncClient, recorder: None, db_url: str
) -> None:
    created = await gateway.post("/api/links", json={"url": "https://example.com/a", "code": "abc"})
    assert created.status_code == 201
    assert created.json()["short_url"] == "http://sho.rt/abc"
    r = await gateway.get(
        "/abc",
        headers={
            "user-agent": "Mozilla/5.0 (X11; Linux)",
            "referer": "https://news.example/",
            "x-forwarded-for": "203.0.113.9",
        },
    )
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.com/a"
    await eventually(lambda: clicks_for(db_url, "abc"), what="the click row")
    conn = await asyncpg.connect(db_url)
    rows = await conn.fetch("SELECT * FROM clicks WHERE code = 'abc'")
    await conn.close()
    assert len(rows) == 1
    row = rows[0]
    # uvicorn trusts X-Forwarded-For from a proxy on localhost; the IP is anonymized.
    assert (row["referrer"], row["is_bot"], row["ip"]) == (
        "https://news.example/",
        False,
        "203.0.113.0",
    )
    assert row["user_agent"] == "Mozilla/5.0 (X11; Linux)"


async def test_generated_code_and_redirect_type(gateway: httpx.AsyncClient) -> None:
    created = await gateway.post(
        "/api/links", json={"url": "https://example.com/b", "redirect_type": 308}
    )
    code = created.json()["code"]
    assert len(code) == 7
    assert code.isalnum()
    r = await gateway.get(f"/{code}")
    assert r.status_code == 308


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://bücher.example/ü?q=ä#é", "https://xn--bcher-kva.example/%C3%BC?q=%C3%A4#%C3%A9"),
        ("https://BÜCHER.example:8443/", "https://xn--bcher-kva.example:8443/"),
        ("https://example.com/ü?", "https://example.com/%C3%BC?"),
    ],
)
async def test_non_ascii_urls_become_ascii(
    gateway: httpx.AsyncClient, url: str, stored: str
) -> None:
    r = await gateway.post("/api/links", json={"url": url})
    assert r.status_code == 201, r.text
    assert r.json()["url"] == stored
    redirect = await gateway.get(f"/{r.json()['code']}")
    assert redirect.status_code == 302
    assert redirect.headers["location"] == stored


async def test_head_is_recorded_as_bot(gateway: httpx.AsyncClient, nc: Client) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com/h", "code": "headme"})
    sub = await nc.jetstream().pull_subscribe("clicks.headme", durable=None, stream="CLICKS")
    r = await gateway.head("/headme")
    assert r.status_code == 302
    msgs = await sub.fetch(1, timeout=5)
    click = msgspec.json.decode(msgs[0].data, type=Click)
    assert click.is_bot
    assert click.code == "headme"
    assert msgs[0].headers
    assert msgs[0].headers["Nats-Msg-Id"] == click.id
    assert "X-Request-Id" in msgs[0].headers
    assert "Linkflow-Enqueued-At" in msgs[0].headers


async def test_unknown_and_expired(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await gateway.post(
        "/api/links", json={"url": "https://example.com/e", "code": "gone", "expires_at": past}
    )
    r = await gateway.get("/gone")
    assert r.status_code == 410
    assert r.json()["status"] == 410


async def test_thousand_concurrent_redirects_thousand_rows(
    gateway: httpx.AsyncClient, recorder: None, db_url: str
) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com/many", "code": "many"})
    limits = asyncio.Semaphore(100)

    async def one() -> int:
        async with limits:
            return (await gateway.get("/many")).status_code

    statuses = await asyncio.gather(*(one() for _ in range(1000)))
    assert statuses.count(302) == 1000

    async def all_in() -> bool:
        return await clicks_for(db_url, "many") >= 1000

    await eventually(all_in, 30, "1000 click rows")
    assert await count(db_url, "SELECT count(DISTINCT id) FROM clicks WHERE code='many'") == 1000
    assert await clicks_for(db_url, "many") == 1000


async def test_patch_and_delete_publish_versioned_events(
    gateway: httpx.AsyncClient, nc: Client, cache_refresher: object
) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com/old", "code": "chg"})
    r = await gateway.patch("/api/links/chg", json={"url": "https://example.com/new"})
    assert r.status_code == 200
    assert r.json()["version"] == 2
    sub = await nc.jetstream().pull_subscribe("links.>", durable=None, stream="LINKS")
    # LINKS keeps the create too (for durable readers such as webhooks).
    (first,) = await sub.fetch(1, timeout=5)
    assert first.subject == "links.created"
    assert msgspec.json.decode(first.data, type=LinkCreated).code == "chg"
    updated = msgspec.json.decode((await sub.fetch(1, timeout=5))[0].data, type=LinkUpdated)
    assert (updated.code, updated.url, updated.version) == ("chg", "https://example.com/new", 2)

    async def redirects_to_new() -> bool:
        return (await gateway.get("/chg")).headers.get("location") == "https://example.com/new"

    await eventually(redirects_to_new, what="the new target")
    assert (await gateway.delete("/api/links/chg")).status_code == 204
    deleted = msgspec.json.decode((await sub.fetch(1, timeout=5))[0].data, type=LinkDeleted)
    assert (deleted.code, deleted.version) == ("chg", 3)

    async def gone() -> bool:
        return (await gateway.get("/chg")).status_code == 404

    await eventually(gone, what="the deleted link to 404")
    assert (await gateway.get("/api/links/chg")).status_code == 404


async def test_links_created_is_published(gateway: httpx.AsyncClient, nc: Client) -> None:
    sub = await nc.subscribe("links.created")
    await gateway.post(
        "/api/links", json={"url": "https://example.com/c", "code": "newone", "tags": ["x"]}
    )
    msg = await sub.next_msg(timeout=5)
    body = msgspec.json.decode(msg.data)
    assert body["code"] == "newone"
    assert body["tags"] == ["x"]
    assert body["created_at"].endswith("Z")
    assert len(body["created_at"]) == 24


async def test_a_row_missing_from_kv_redirects_once_reconciled(
    gateway: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    # A row no gateway has put in KV (restored backup, another region): a
    # miss does no I/O once the map is loaded, so the code is unknown until
    # the cache-refresher's reconciliation puts it in KV; then every
    # gateway's watch brings it.
    await count(
        db_url,
        "WITH i AS (INSERT INTO links (code, url) VALUES ('dbonly', "
        "'https://example.com/db') RETURNING 1) SELECT count(*) FROM i",
    )
    assert (await gateway.get("/dbonly")).status_code == 404
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    try:
        repairs = await reconcile(await nc.jetstream().key_value(topology.KV_LINKS), pool)
    finally:
        await pool.close()
    assert repairs == {"missing": 1}
    r = await gateway.get("/dbonly")
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.com/db"


async def test_unknown_codes_are_404_with_no_lookup(gateway: httpx.AsyncClient) -> None:
    async def lookups() -> dict[str, float]:
        text = (await gateway.get("/metrics")).text
        return {
            line.split('found="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("linkflow_link_lookups_total{")
        }

    before = await lookups()
    # Codes that cannot exist are refused at once.
    for path in ("/favicon.ico", "/x", "/no.such.code"):
        assert (await gateway.get(path)).status_code == 404, path
    assert await lookups() == before
    # An unknown code waits for its arrival by the watch, and is not looked
    # up in KV or the database.
    statuses = [(await gateway.get("/unknown-code")).status_code for _ in range(5)]
    assert statuses == [404] * 5
    after = await lookups()
    assert after.get("unknown", 0) - before.get("unknown", 0) == 5
    assert {k: v for k, v in after.items() if k != "unknown"} == {
        k: v for k, v in before.items() if k != "unknown"
    }
    # A link created now redirects at once.
    await gateway.post("/api/links", json={"url": "https://example.com/l", "code": "later"})
    assert (await gateway.get("/later")).status_code == 302
