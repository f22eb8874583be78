"""The click's visitor id: one salt per UTC day shared by every gateway
through KV, expiring with its day; the same visitor of one link on one day
has one id; analytics counts distinct ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.link.visitors import Visitors
from shared.contracts import Click
from shared.jetstream import topology
from tests.agents import IPHONE, WINDOWS
from tests.harness import eventually
from tests.integration.test_analytics import analytics_settled, human, publish, total


async def test_a_visitor_has_one_id_per_link_and_day(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    seen: list[Click] = []

    async def on(msg: Msg) -> None:
        seen.append(msgspec.json.decode(msg.data, type=Click))

    await nc.subscribe("clicks.>", cb=on)
    await nc.flush()
    for code in ("vis-a", "vis-b"):
        r = await gateway.post("/api/links", json={"url": "https://example.com/", "code": code})
        assert r.status_code == 201
    for code, ua in (("vis-a", WINDOWS), ("vis-a", WINDOWS), ("vis-a", IPHONE), ("vis-b", WINDOWS)):
        assert (await gateway.get(f"/{code}", headers={"user-agent": ua})).status_code == 302

    async def four() -> bool:
        return len(seen) == 4

    await eventually(four, what="four clicks")
    ids = [c.visitor for c in seen]
    assert all(v is not None and re.fullmatch(r"[0-9a-f]{32}", v) for v in ids), ids
    assert ids[0] == ids[1]  # the same visitor, link and day
    assert ids[2] != ids[0]  # another browser
    assert ids[3] != ids[0]  # another link: no tracking across links


async def test_every_gateway_shares_the_days_salt_and_it_ends_with_the_day(nc: Client) -> None:
    kv = await nc.jetstream().key_value(topology.KV_SALTS)
    one, two = Visitors(kv), Visitors(kv)
    await one.prepare()
    await two.prepare()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert one.visitor(today, "198.51.100.7", "UA", "code") == two.visitor(
        today, "198.51.100.7", "UA", "code"
    )
    # The server deletes the salt at the end of its day: its TTL says so.
    raw = await nc.jetstream().get_last_msg(
        f"KV_{topology.KV_SALTS}", f"$KV.{topology.KV_SALTS}.{today}"
    )
    ttl = float((raw.headers or {})["Nats-TTL"].rstrip("s"))
    now = datetime.now(UTC)
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    assert 0 < ttl <= (end - now).total_seconds() + 1


async def test_tomorrows_salt_comes_in_the_last_hour_and_yesterdays_is_forgotten(
    nc: Client,
) -> None:
    kv = await nc.jetstream().key_value(topology.KV_SALTS)
    visitors = Visitors(kv)
    late = datetime(2031, 5, 17, 23, 30, tzinfo=UTC)
    await visitors.prepare(late)
    assert visitors.visitor("2031-05-17", "198.51.100.7", None, "c0de") is not None
    assert visitors.visitor("2031-05-18", "198.51.100.7", None, "c0de") is not None
    # Different days, different salts: one visitor is two strangers.
    assert visitors.visitor("2031-05-17", "198.51.100.7", None, "c0de") != visitors.visitor(
        "2031-05-18", "198.51.100.7", None, "c0de"
    )
    await visitors.prepare(late + timedelta(hours=1))
    assert visitors.visitor("2031-05-17", "198.51.100.7", None, "c0de") is None
    assert visitors.visitor("2031-05-18", "198.51.100.7", None, "c0de") is not None


async def test_analytics_counts_distinct_visitors(analytics: httpx.AsyncClient, nc: Client) -> None:
    a, b, crawler = "a" * 32, "b" * 32, "c" * 32
    clicks = [
        human("uniq", visitor=a),
        human("uniq", visitor=a),
        human("uniq", visitor=b),
        human("uniq", visitor=crawler, is_bot=True, user_agent="Googlebot/2.1"),
        human("uniq"),  # no visitor id (no salt that day): counted, not a visitor
    ]
    await publish(nc, clicks)

    async def counted() -> bool:
        return await total(analytics, "uniq", bots=True) == 5

    await eventually(counted, what="five clicks")
    body = (await analytics.get("/api/stats/links/uniq")).json()
    assert body["total"] == 4
    assert body["visitors"] == 2
    assert sum(p["visitors"] for p in body["series"]) == 2
    with_bots = (
        await analytics.get("/api/stats/links/uniq", params={"include_bots": "true"})
    ).json()
    assert with_bots["visitors"] == 3
    # Redelivered copies change nothing.
    await publish(nc, clicks, suffix="-again")
    await eventually(lambda: analytics_settled(nc), what="the copies handled")
    assert await total(analytics, "uniq", bots=True) == 5
    assert (await analytics.get("/api/stats/links/uniq")).json()["visitors"] == 2
