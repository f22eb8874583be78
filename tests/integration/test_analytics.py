"""Analytics: aggregates counted once, stats API, links created, live stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest
from nats.aio.client import Client

from services.analytics.live import LiveClicks
from services.analytics.webapp import FILES as WEBAPP
from services.link.clicks import click_id
from shared.contracts import Click, LinkCreated, encode, now
from shared.http import keys
from shared.jetstream import topology
from shared.settings import Common
from tests.harness import eventually

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


def human(code: str, **kw: object) -> Click:
    fields: dict[str, object] = {
        "user_agent": CHROME,
        "referrer": "https://www.news.example/a",
        "country": "DE",
        **kw,
    }
    ts = fields.pop("ts", None) or now()
    return Click(id=click_id(), code=code, ts=ts, **fields)  # type: ignore[arg-type]


def bot(code: str) -> Click:
    return Click(id=click_id(), code=code, ts=now(), user_agent="Googlebot/2.1", is_bot=True)


async def publish(nc: Client, clicks: list[Click], suffix: str = "") -> None:
    js = nc.jetstream()
    for c in clicks:
        await js.publish(f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": c.id + suffix})


async def total(client: httpx.AsyncClient, code: str, bots: bool = False) -> int:
    r = await client.get(f"/api/stats/links/{code}", params={"include_bots": str(bots).lower()})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def analytics_settled(nc: Client) -> bool:
    info = await nc.jetstream().consumer_info(topology.CLICKS, topology.ANALYTICS_CLICKS.name)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_humans_and_bots_are_counted_apart(analytics: httpx.AsyncClient, nc: Client) -> None:
    clicks = [human("stat") for _ in range(7)] + [
        human("stat", user_agent=IPHONE, referrer=None, country=None)
    ]
    clicks += [bot("stat") for _ in range(3)]
    await publish(nc, clicks)

    async def counted() -> bool:
        return await total(analytics, "stat", bots=True) == 11

    await eventually(counted, what="11 clicks counted")
    assert await total(analytics, "stat") == 8
    body = (await analytics.get("/api/stats/links/stat", params={"interval": "hour"})).json()
    assert body["referrers"] == [
        {"referrer": "news.example", "count": 7},
        {"referrer": "(direct)", "count": 1},
    ]
    assert body["countries"] == [
        {"country": "DE", "count": 7},
        {"country": "(unknown)", "count": 1},
    ]
    assert body["devices"] == [{"device": "desktop", "count": 7}, {"device": "mobile", "count": 1}]
    assert sum(p["count"] for p in body["series"]) == 8
    assert len(body["series"]) >= 24 * 7  # every hour of the default week, zeros included
    with_bots = (
        await analytics.get("/api/stats/links/stat", params={"include_bots": "true"})
    ).json()
    assert {"device": "bot", "count": 3} in with_bots["devices"]
    top = (await analytics.get("/api/stats/top")).json()["items"]
    assert top[0] == {"code": "stat", "domain": None, "count": 8}


async def test_redelivered_clicks_do_not_count_twice(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    clicks = [human("twice") for _ in range(20)]
    await publish(nc, clicks)

    async def counted() -> bool:
        return await total(analytics, "twice") == 20

    await eventually(counted, what="20 clicks")
    # The same clicks again, as a spool or DLQ replay would send them.
    await publish(nc, clicks, suffix="-again")
    await eventually(lambda: analytics_settled(nc), what="the copies handled")
    assert await total(analytics, "twice") == 20


async def test_backfill_over_counted_range_changes_nothing(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    await publish(nc, [human("bfill") for _ in range(30)])

    async def counted() -> bool:
        return await total(analytics, "bfill") == 30

    await eventually(counted, what="30 clicks")
    end = datetime.now(UTC) + timedelta(seconds=1)
    r = await analytics.post(
        "/api/backfills", json={"from": start.isoformat(), "to": end.isoformat()}
    )
    assert r.status_code == 202
    backfill = r.json()
    assert backfill["total"] == 30

    async def done() -> dict[str, object] | None:
        state = (await analytics.get(f"/api/backfills/{backfill['id']}")).json()
        return state if state["state"] == "done" else None

    finished = await eventually(done, what="the backfill to finish")
    assert finished["processed"] == 30
    assert await total(analytics, "bfill") == 30
    listed = (await analytics.get("/api/backfills")).json()["items"]
    assert [b["id"] for b in listed] == [backfill["id"]]


async def test_live_stream_delivers_a_click(analytics: httpx.AsyncClient, nc: Client) -> None:
    async with analytics.stream(
        "GET", "/api/stream/clicks", params={"code": "live"}, timeout=10
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        other, wanted = human("other"), human("live")
        await publish(nc, [other, wanted])
        received: list[str] = []
        async with asyncio.timeout(10):
            async for line in lines:
                received.append(line)
                if line.startswith("data: "):
                    break
    assert "event: click" in received
    data = msgspec.json.decode(received[-1].removeprefix("data: "), type=Click)
    assert data.id == wanted.id


async def test_links_created_per_day(analytics: httpx.AsyncClient, nc: Client) -> None:
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    for created_at in (today, today, yesterday):
        event = LinkCreated(
            code=f"c{click_id()[-8:]}", url="https://e.example", created_at=created_at, tags=[]
        )
        await nc.publish("links.created", encode(event))

    async def days() -> list[dict[str, object]] | None:
        r = await analytics.get(
            "/api/stats/links-created", params={"from": yesterday.date().isoformat()}
        )
        found = r.json()["days"]
        return found if sum(int(d["count"]) for d in found) == 3 else None

    found = await eventually(days, what="three links counted")
    assert found == [
        {"day": yesterday.date().isoformat(), "count": 1},
        {"day": today.date().isoformat(), "count": 2},
    ]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/stats/links/x", {"from": "yesterday"}, "from"),
        ("/api/stats/links/x", {"to": "2026-13-01"}, "to"),
        ("/api/stats/links/x", {"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ("/api/stats/links/x", {"interval": "week"}, "interval"),
        ("/api/stats/links/x", {"include_bots": "maybe"}, "include_bots"),
        ("/api/stats/top", {"limit": "0"}, "limit"),
        ("/api/stats/top", {"limit": "101"}, "limit"),
        ("/api/stats/top", {"limit": "ten"}, "limit"),
        ("/api/stats/links-created", {"from": "soon"}, "from"),
        ("/api/dlq", {"limit": "0"}, "limit"),
    ],
)
async def test_invalid_query_is_422(
    analytics: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    r = await analytics.get(path, params=params)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]]


async def test_invalid_backfill_requests(analytics: httpx.AsyncClient) -> None:
    r = await analytics.post("/api/backfills", content=b"{nope")
    assert r.status_code == 400
    r = await analytics.post("/api/backfills", json={"from": "2026-02-01", "to": "2026-01-01"})
    assert r.status_code == 422
    r = await analytics.post("/api/backfills", json={"to": "2026-01-01"})
    assert r.status_code == 422
    assert (await analytics.get("/api/backfills/nope")).status_code == 404
    assert (await analytics.delete("/api/backfills/nope")).status_code == 404


# What a page or module of the app loads: src/href of the page, and a
# module's relative imports; and any of them pointing at another site.
REFERENCE = re.compile(r'(?:src|href)="([^"#:$]+)"|from "\./([^"]+)"|import "\./([^"]+)"')
ELSEWHERE = re.compile(r'(?:src|href)="https?:|from "https?:|import "https?:|url\(https?:')


async def test_the_web_app_is_served_whole_and_offline(analytics: httpx.AsyncClient) -> None:
    """Every module the page loads is served from /app/ itself (no CDN: a
    self-hosted user may run offline), and the vendored chart library is the
    pinned release its manifest names."""
    r = await analytics.get("/app/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert (await analytics.get("/app")).headers["location"] == "/app/"
    config = (await analytics.get("/app/config.json")).json()
    # No click-recorder URL set: the web app offers no raw-clicks download.
    assert config == {
        "gateway": Common().public_url,
        "webhooks": Common().webhooks_url,
        "clicks": None,
    }
    pending, seen = ["index.html"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        got = await analytics.get(f"/app/{name}")
        assert got.status_code == 200, name
        text = got.text
        assert not ELSEWHERE.search(text), name
        base = name.rpartition("/")[0]
        for ref in REFERENCE.findall(text):
            target = next(x for x in ref if x)
            pending.append(f"{base}/{target}".lstrip("/") if base else target)
    assert {"app.js", "api.js", "style.css", "vendor/uplot/uPlot.esm.js"} <= seen
    manifest = json.loads((WEBAPP / "vendor/uplot/VENDOR.json").read_text())
    for name, digest in manifest["files"].items():
        served = (await analytics.get(f"/app/vendor/uplot/{name}")).content
        assert hashlib.sha256(served).hexdigest() == digest, name
    assert "MIT License" in (WEBAPP / "vendor/uplot/LICENSE").read_text()


async def test_a_session_says_what_its_key_may_do(analytics: httpx.AsyncClient, nc: Client) -> None:
    r = await analytics.get("/api/session")
    assert r.json() == {"name": "admin", "scopes": list(keys.SCOPES)}
    reader = await keys.create(nc.jetstream(), "reader", (keys.LINKS_WRITE,))
    r = await analytics.get("/api/session", headers={"authorization": f"Bearer {reader}"})
    assert r.json() == {"name": "reader", "scopes": [keys.LINKS_READ, keys.LINKS_WRITE]}
    r = await analytics.get("/api/session", headers={"authorization": "Bearer lf_nope"})
    assert r.status_code == 401


async def test_a_click_the_database_refuses_is_dead_lettered_alone(
    analytics: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    conn = await asyncpg.connect(db_url)
    await conn.execute("ALTER TABLE counted_clicks ADD CONSTRAINT no_evil CHECK (code <> 'evil')")
    await conn.close()
    fine = [human("fine") for _ in range(20)]
    await publish(nc, [*fine[:10], human("evil"), *fine[10:]])

    async def counted() -> bool:
        return await total(analytics, "fine") == 20

    await eventually(counted, what="the twenty others counted")
    js = nc.jetstream()
    sub = await js.pull_subscribe("dlq.CLICKS.analytics", durable=None, stream=topology.DLQ)
    [dead] = await sub.fetch(1, timeout=5)
    assert msgspec.json.decode(dead.data, type=Click).code == "evil"
    headers = dead.headers or {}
    assert headers["Linkflow-Attempts"] == "1"
    assert headers["Linkflow-Error"].startswith("PermanentError: refused by the database")
    assert "no_evil" in headers["Linkflow-Error"]
    await eventually(lambda: analytics_settled(nc), what="every click settled")
    assert (await js.stream_info(topology.DLQ)).state.messages == 1


async def test_the_live_subscription_exists_only_while_someone_watches(nc: Client) -> None:
    """Every click delivered to the live view's core subscription costs CPU:
    with no browser open there is none."""
    live = LiveClicks(nc)
    assert not live.watching
    first, second = live.events(None), live.events("watched")
    assert await anext(first) == b": connected\n\n"
    assert await anext(second) == b": connected\n\n"
    assert live.watching
    await publish(nc, [human("watched")])
    assert (await anext(second)).startswith(b"event: click\ndata: ")
    await first.aclose()
    assert live.watching  # one client still open
    await second.aclose()
    assert not live.watching


async def test_browsers_oses_and_countries_from_geoip(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    """Browser and OS from the user agent (ua-parser); the country from the
    CDN header, else from the bundled GeoIP data on the click's (anonymized)
    address."""
    firefox_linux = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
    safari_iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    )
    clicks = [
        human("dims", user_agent=firefox_linux, country=None, ip="81.2.69.0"),
        human("dims", user_agent=firefox_linux, country=None, ip="81.2.69.0"),
        human("dims", user_agent=safari_iphone, country="AT", ip="81.2.69.0"),
        human("dims", user_agent=safari_iphone, country=None, ip="10.0.0.0"),
    ]
    await publish(nc, clicks)

    async def counted() -> bool:
        return await total(analytics, "dims") == 4

    await eventually(counted, what="four clicks")
    body = (await analytics.get("/api/stats/links/dims")).json()
    assert body["browsers"] == [
        {"browser": "Firefox", "count": 2},
        {"browser": "Mobile Safari", "count": 2},
    ]
    assert body["oses"] == [{"os": "ios", "count": 2}, {"os": "linux", "count": 2}]
    assert body["countries"] == [
        {"country": "GB", "count": 2},
        {"country": "(unknown)", "count": 1},
        {"country": "AT", "count": 1},
    ]
    assert body["devices"] == [{"device": "desktop", "count": 2}, {"device": "mobile", "count": 2}]
