"""API keys and scopes on both HTTP services, against real NATS and PostgreSQL.

Every documented route is called with no key, an unknown key, a revoked key,
an expired key, a key without the route's scope and a key with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from services.link.app import build as build_gateway
from services.link.settings import Settings as LinkSettings
from shared import db
from shared.contracts import now
from shared.http import keys
from shared.jetstream import topology
from shared.settings import Common, Rate
from tests.conftest import TEST_WORKER
from tests.harness import bearer, eventually, serve
from tests.servers import Servers

# A key without the scope a route needs: one close to it, never a superset.
WITHOUT = {
    keys.LINKS_READ: keys.STATS_READ,
    keys.LINKS_WRITE: keys.LINKS_READ,
    keys.STATS_READ: keys.LINKS_WRITE,
    keys.OPS: keys.STATS_READ,
    keys.ADMIN: keys.OPS,
}
PATH_PARAMS = {"{code}": "abc", "{seq}": "1", "{backfill_id}": "nope", "{host}": "go.example.com"}


class Services:
    def __init__(self, gateway: str, analytics: str) -> None:
        self.gateway = gateway
        self.analytics = analytics


@contextlib.asynccontextmanager
async def both(
    servers: Servers, db_url: str, tmp_path: Path, **common: Any
) -> AsyncIterator[Services]:
    base = Common(
        nats_url=servers.nats_url,
        database_url=db_url,
        analytics_database_url=db_url,
        public_url="http://sho.rt",
        **common,
    )
    await db.migrate(db_url, ANALYTICS.sql)
    gateway = build_gateway(
        LinkSettings(common=base, spool_dir=str(tmp_path / "spool"), write_rate=Rate(5.0))
    )
    analytics = build_analytics(AnalyticsSettings(common=base, worker=TEST_WORKER))
    async with serve(gateway) as g, serve(analytics) as a:
        yield Services(g, a)


@pytest.fixture
async def services(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path
) -> AsyncIterator[Services]:
    async with both(servers, db_url, tmp_path) as s:
        yield s


async def routes(base: str) -> list[tuple[str, str, str]]:
    """(method, path, scope) for every operation the service documents."""
    async with httpx.AsyncClient(base_url=base) as c:
        doc = (await c.get("/api/openapi.json")).json()
    found = []
    for template, ops in doc["paths"].items():
        path = template
        for param, value in PATH_PARAMS.items():
            path = path.replace(param, value)
        for method, op in ops.items():
            found.append((method.upper(), path, op["x-scope"]))
    assert found
    return found


async def call(base: str, method: str, path: str, key: str | None) -> httpx.Response:
    headers = bearer(key) if key else {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:
        body = {"json": {}} if method in ("POST", "PATCH") else {}
        # The live stream never ends: its status line is all this needs.
        async with c.stream(method, path, **body) as r:  # type: ignore[arg-type]
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                return r
            await r.aread()
            return r


async def test_every_route_checks_the_key_and_its_scope(services: Services, nc: Client) -> None:
    js = nc.jetstream()
    by_scope = {s: await keys.create(js, s.replace(":", "-"), (s,)) for s in keys.SCOPES}
    revoked = await keys.create(js, "revoked", (keys.ADMIN,))
    await keys.revoke(js, "revoked")
    expired = await keys.create(js, "expired", (keys.ADMIN,), now() - timedelta(seconds=1))
    cases = 0
    for base in (services.gateway, services.analytics):
        for method, path, scope in await routes(base):
            for key, why in [
                (None, "an API key is required"),
                ("lf_" + "x" * 32, "unknown API key"),
                (revoked, "'revoked' was revoked"),
                (expired, "'expired' has expired"),
            ]:
                r = await call(base, method, path, key)
                assert r.status_code == 401, (method, path, key, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert why in r.json()["detail"]
            if scope == keys.ANY_KEY:  # /api/session: every valid key may ask
                for right in by_scope.values():
                    assert (await call(base, method, path, right)).status_code == 200
                cases += 1
                continue
            wrong = by_scope[WITHOUT[scope]]
            r = await call(base, method, path, wrong)
            assert r.status_code == 403, (method, path, r.text)
            assert f"lacks the scope {scope!r}" in r.json()["detail"]
            for right in (by_scope[scope], by_scope[keys.ADMIN]):
                r = await call(base, method, path, right)
                assert r.status_code not in (401, 403), (method, path, r.text)
            cases += 1
    assert cases >= 18


async def test_public_routes_need_no_key(services: Services) -> None:
    async with httpx.AsyncClient() as c:
        for base in (services.gateway, services.analytics):
            for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs"):
                assert (await c.get(base + path)).status_code == 200, (base, path)
        assert (await c.get(services.analytics + "/app/")).status_code == 200
        r = await c.get(services.analytics + "/console")
        assert r.status_code == 308
        assert r.headers["location"] == "/app/#/operations"
        # A redirect is public: 404 for an unknown code, not 401.
        assert (await c.get(services.gateway + "/nosuchcode")).status_code == 404


async def test_a_revocation_reaches_both_services_within_2_s(
    services: Services, nc: Client
) -> None:
    js = nc.jetstream()
    key = await keys.create(js, "short-lived", (keys.ADMIN,))
    probes = [(services.gateway, "/api/links"), (services.analytics, "/api/pipeline")]
    for base, path in probes:
        assert (await call(base, "GET", path, key)).status_code == 200
    await keys.revoke(js, "short-lived")
    revoked_at = time.monotonic()

    async def refused() -> bool:
        codes = [(await call(b, "GET", p, key)).status_code for b, p in probes]
        return codes == [401, 401]

    await eventually(refused, 5, "both services to refuse the revoked key")
    assert time.monotonic() - revoked_at < 2


async def test_no_table_and_no_kv_entry_holds_a_key(
    services: Services, nc: Client, db_url: str
) -> None:
    js = nc.jetstream()
    key = await keys.create(js, "secret-keeper", (keys.ADMIN,))
    r = await call(services.gateway, "POST", "/api/links", key)
    assert r.status_code == 422  # the call went through the guard to the route
    async with httpx.AsyncClient(base_url=services.gateway, headers=bearer(key)) as c:
        assert (await c.post("/api/links", json={"url": "https://example.com"})).status_code == 201
    conn = await asyncpg.connect(db_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert len(tables) >= 4
        for (table,) in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table}" t')
            assert not any(key in row["row"] for row in rows), table
    finally:
        await conn.close()
    for bucket in (topology.KV_KEYS, topology.KV_USAGE):
        kv = await js.key_value(bucket)
        for name in await kv.keys():
            value = (await kv.get(name)).value or b""
            assert key.encode() not in value
            assert key[3:].encode() not in value
    held = keys.decode(
        (await (await js.key_value(topology.KV_KEYS)).get("secret-keeper")).value or b""
    )
    assert held.sha256 == keys.digest(key)
    assert held.prefix == key[:9]

    async def used() -> bool:
        return any(r.name == "secret-keeper" and u for r, u in await keys.list_(js))

    await eventually(used, 5, "the key's last use noted")


async def test_writes_are_limited_per_key(services: Services, nc: Client) -> None:
    js = nc.jetstream()
    busy = await keys.create(js, "busy", (keys.LINKS_WRITE,))
    calm = await keys.create(js, "calm", (keys.LINKS_WRITE,))
    async with httpx.AsyncClient(base_url=services.gateway, headers=bearer(busy)) as c:
        answers = await asyncio.gather(
            *(c.post("/api/links", json={"url": f"https://example.com/{i}"}) for i in range(12))
        )
        statuses = sorted(r.status_code for r in answers)
        # 5/s with a burst of 5: the first five go through, the rest wait.
        assert statuses.count(201) in (5, 6), statuses
        limited = [r for r in answers if r.status_code == 429]
        assert limited
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert limited[0].headers["content-type"] == "application/problem+json"
        # Reads are not writes.
        assert (await c.get("/api/links")).status_code == 200
    # Another key has a bucket of its own.
    async with httpx.AsyncClient(base_url=services.gateway, headers=bearer(calm)) as c:
        r = await c.post("/api/links", json={"url": "https://example.com/calm"})
        assert r.status_code == 201


async def test_failed_authentications_are_limited_per_address(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path
) -> None:
    key = await keys.create(nc.jetstream(), "good", (keys.ADMIN,))
    async with both(
        servers, db_url, tmp_path, auth_failure_rate=Rate(1.0), auth_failure_burst=3
    ) as s:
        for _ in range(3):
            assert (await call(s.gateway, "GET", "/api/links", "lf_wrong")).status_code == 401
        r = await call(s.gateway, "GET", "/api/links", "lf_wrong")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert "too many failed authentications" in r.json()["detail"]
        assert (await call(s.gateway, "GET", "/api/links", None)).status_code == 429
        # A right key from the same address still passes: one guesser behind
        # a shared proxy or NAT locks nobody else out.
        assert (await call(s.gateway, "GET", "/api/links", key)).status_code == 200

        async def refilled() -> bool:
            r = await call(s.gateway, "GET", "/api/links", "lf_wrong")
            return r.status_code == 401

        await eventually(refilled, 5, "the limit to refill")


async def test_auth_off_checks_nothing(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path
) -> None:
    async with both(servers, db_url, tmp_path, auth=False) as s:
        r = await call(s.gateway, "POST", "/api/links", None)
        assert r.status_code == 422
        assert (await call(s.analytics, "GET", "/api/pipeline", None)).status_code == 200


async def test_an_open_live_stream_ends_when_its_key_is_revoked(
    services: Services, nc: Client
) -> None:
    js = nc.jetstream()
    key = await keys.create(js, "watcher", (keys.STATS_READ,))
    async with (
        httpx.AsyncClient(base_url=services.analytics, headers=bearer(key), timeout=10) as c,
        c.stream("GET", "/api/stream/clicks") as r,
    ):
        assert r.status_code == 200
        chunks = r.aiter_bytes()
        assert b"connected" in await anext(chunks)
        await keys.revoke(js, "watcher")
        revoked_at = time.monotonic()
        async with asyncio.timeout(5):
            async for _ in chunks:  # keepalives, until the server ends the stream
                pass
        assert time.monotonic() - revoked_at < 2.5
