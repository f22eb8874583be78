"""A/B destinations through real servers: the split at the redirect, the
click that records it, the stats that count each side."""

from __future__ import annotations

from collections import Counter

import asyncpg
import httpx

from tests.harness import eventually

SPLIT = {
    "url": "https://example.com/home",
    "code": "abtest",
    "destinations": [
        {"url": "https://a.example/", "weight": 1},
        {"url": "https://b.example/", "weight": 3},
    ],
}
SIDES = {"https://a.example/": 0, "https://b.example/": 1}


def visitor(i: int) -> dict[str, str]:
    """A visitor of its own: uvicorn takes the address from the proxy header."""
    return {"user-agent": "Mozilla/5.0 (X11; Linux)", "x-forwarded-for": f"198.51.100.{i}"}


async def test_a_split_sends_each_visitor_to_one_side_and_counts_both(
    gateway: httpx.AsyncClient,
    recorder: None,
    cache_refresher: object,
    analytics: httpx.AsyncClient,
    db_url: str,
) -> None:
    r = await gateway.post("/api/links", json=SPLIT)
    assert r.status_code == 201, r.text
    assert r.json()["destinations"] == SPLIT["destinations"]

    landed: Counter[str] = Counter()
    for i in range(1, 201):
        r = await gateway.get("/abtest", headers=visitor(i))
        assert r.status_code == 302
        landed[r.headers["location"]] += 1
    assert set(landed) == set(SIDES)
    assert 0.15 <= landed["https://a.example/"] / 200 <= 0.35, landed
    # One visitor, the same side all day.
    again = {
        (await gateway.get("/abtest", headers=visitor(7))).headers["location"] for _ in range(20)
    }
    assert len(again) == 1

    # Each click says which side it went to; the stats count both.
    async def recorded() -> bool:
        conn = await asyncpg.connect(db_url)
        try:
            n = await conn.fetchval("SELECT count(*) FROM clicks WHERE code = 'abtest'")
        finally:
            await conn.close()
        return bool(n == 220)

    await eventually(recorded, 20, "every click recorded")
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT destination, count(*) AS n FROM clicks WHERE code = 'abtest' GROUP BY 1"
        )
    finally:
        await conn.close()
    by_side = {r["destination"]: r["n"] for r in rows}
    assert by_side[0] + by_side[1] == 220
    assert by_side[0] - landed["https://a.example/"] in (0, 20)  # visitor 7's 20 more

    async def counted() -> bool:
        r = await analytics.get("/api/stats/links/abtest")
        return bool(r.json()["total"] == 220)

    await eventually(counted, 20, "every click counted")
    split = (await analytics.get("/api/stats/links/abtest")).json()["destinations"]
    assert [(d["destination"], d["count"]) for d in split] == [(0, by_side[0]), (1, by_side[1])]
    assert sum(d["visitors"] for d in split) == 200


async def test_rules_come_first_and_a_split_can_be_removed(
    gateway: httpx.AsyncClient, cache_refresher: object
) -> None:
    body = {
        **SPLIT,
        "rules": [{"when": {"device": ["mobile"]}, "url": "https://m.example/"}],
    }
    assert (await gateway.post("/api/links", json=body)).status_code == 201
    phone = {"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}
    for _ in range(5):
        assert (await gateway.get("/abtest", headers=phone)).headers[
            "location"
        ] == "https://m.example/"
    r = await gateway.patch("/api/links/abtest", json={"destinations": None})
    assert r.status_code == 200
    assert r.json()["destinations"] is None

    async def plain() -> bool:
        r = await gateway.get("/abtest", headers=visitor(1))
        return r.headers["location"] == "https://example.com/home"

    await eventually(plain, 10, "the split gone from the redirect")
    history = (await gateway.get("/api/links/abtest/history")).json()["items"]
    assert history[0]["destinations"] is None
    assert history[1]["destinations"] == SPLIT["destinations"]


async def test_a_bad_split_is_refused_naming_each_problem(gateway: httpx.AsyncClient) -> None:
    for destinations, field in (
        ([{"url": "https://a.example/", "weight": 1}], "destinations"),
        ([{"url": "https://a.example/", "weight": 1}] * 11, "destinations"),
        ("half", "destinations"),
        (
            [
                {"url": "https://a.example/", "weight": 0},
                {"url": "https://b.example/", "weight": 1},
            ],
            "destinations[0].weight",
        ),
        (
            [{"url": "ftp://a.example/", "weight": 1}, {"url": "https://b.example/", "weight": 1}],
            "destinations[0].url",
        ),
        (
            [{"url": "https://a.example/", "weight": 1}, {"url": "https://b.example/", "w": 1}],
            "destinations[1]",
        ),
        (
            [
                {"url": "https://a.example/", "weight": 1.5},
                {"url": "https://b.example/", "weight": 1},
            ],
            "destinations[0].weight",
        ),
    ):
        r = await gateway.post(
            "/api/links", json={"url": "https://example.com/", "destinations": destinations}
        )
        assert r.status_code == 422, destinations
        assert r.json()["errors"][0]["field"] == field, r.json()
    assert (await gateway.get("/api/links")).json()["items"] == []
