"""Orphan visits end to end: a real gateway counts requests that matched no
link and sends ``visits.orphan`` once a second; analytics stores them and
``GET /api/stats/orphans`` answers counts per kind and the top paths."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.contracts import ORPHAN_VISITS, OrphanVisits
from tests.harness import eventually

# path -> (kind, requests)
VISITS = {
    "/": ("base_url", 2),
    "/wp-login.php": ("invalid_code", 3),
    "/no/such/page": ("invalid_code", 1),
    "/summer-sale": ("not_found", 4),
}
# Not orphans: the API, health, a link that exists.
NOT_COUNTED = ("/api/links", "/healthz", "/readyz", "/metrics", "/api/docs", "/known")


async def test_orphan_visits_are_sent_stored_and_served(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, nc: Client
) -> None:
    r = await gateway.post("/api/links", json={"url": "https://example.com/", "code": "known"})
    assert r.status_code == 201, r.text
    seen: list[OrphanVisits] = []

    async def keep(msg: Msg) -> None:
        seen.append(msgspec.json.decode(msg.data, type=OrphanVisits))

    sub = await nc.subscribe(ORPHAN_VISITS, cb=keep)
    await nc.flush()
    for path, (_, n) in VISITS.items():
        for i in range(n):
            r = await (gateway.head(path) if i else gateway.get(path))
            assert r.status_code == 404, (path, r.status_code)
    for path in NOT_COUNTED:
        await gateway.get(path)

    def summed() -> Counter[tuple[str | None, str, str]]:
        total: Counter[tuple[str | None, str, str]] = Counter()
        for v in seen:
            total[(v.domain, v.kind, v.path)] += v.count
        return total

    expected = {(None, kind, path): n for path, (kind, n) in VISITS.items()}

    async def sent() -> bool:
        return dict(summed()) == expected

    await eventually(sent, 10, f"visits.orphan adding up to {expected} (seen {seen})")
    await sub.unsubscribe()
    # One message per key and window: the windows are contiguous seconds.
    assert all(v.from_ < v.to for v in seen)
    keys_per_window = Counter((v.from_, v.domain, v.kind, v.path) for v in seen)
    assert max(keys_per_window.values()) == 1

    async def served() -> dict[str, Any] | None:
        r = await analytics.get("/api/stats/orphans")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["total"] == 10 else None

    body = await eventually(served, 10, "orphan visits stored")
    assert body["domain"] is None
    assert body["kinds"] == {"base_url": 2, "invalid_code": 4, "not_found": 4}
    assert body["top_paths"] == [
        {"path": "/summer-sale", "kind": "not_found", "count": 4},
        {"path": "/wp-login.php", "kind": "invalid_code", "count": 3},
        {"path": "/", "kind": "base_url", "count": 2},
        {"path": "/no/such/page", "kind": "invalid_code", "count": 1},
    ]
    # The default domain by its host (analytics' LINKFLOW_PUBLIC_URL); another's has none.
    mine = (await analytics.get("/api/stats/orphans?domain=127.0.0.1")).json()
    assert (mine["domain"], mine["total"]) == ("127.0.0.1", 10)
    other = (await analytics.get("/api/stats/orphans?domain=Go.Example")).json()
    assert (other["domain"], other["total"], other["top_paths"]) == ("go.example", 0, [])
    # A range before the visits has none; ranges are bounded as the other stats'.
    r = await analytics.get("/api/stats/orphans?from=2020-01-01&to=2020-01-02")
    assert r.json()["total"] == 0
    r = await analytics.get("/api/stats/orphans?from=2000-01-01&to=2020-01-02")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "from"
