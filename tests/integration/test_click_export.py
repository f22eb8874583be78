"""Exports on real servers: a link's figures as CSV (analytics), and the raw
clicks the recorder keeps (``GET /api/clicks``, CSV and NDJSON), their
filters and who may see which."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from nats.aio.client import Client

from services.click_recorder.export import COLUMNS
from services.link.clicks import click_id
from shared.contracts import Click, encode
from shared.http import keys
from tests.harness import bearer, count, eventually

PUBLIC_HOST = "sho.rt"  # tests.integration.conftest.PUBLIC_URL's: the default domain
GO = "go.example"
# Values a CSV writer must quote, and ones a spreadsheet would run as formulas.
AWKWARD = ['=HYPERLINK("https://evil.test","x")', 'a "quoted", comma\nand newline', "+1", "@SUM"]


async def publish(nc: Client, clicks: list[Click]) -> None:
    js = nc.jetstream()
    for c in clicks:
        await js.publish(f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": c.id})


def click(code: str, at: datetime, **kw: Any) -> Click:
    return Click(id=click_id(), code=code, ts=at, **kw)


async def bulk(db_url: str, n: int, start: datetime, end: datetime, code: str = "bulk") -> None:
    """``n`` clicks on 100 codes (``<code>0``…), spread evenly over
    ``[start, end)``, inserted by SQL (the partitions they need made first)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SELECT linkflow_click_partitions($1, $2)", start, end)
        await conn.execute(
            "INSERT INTO clicks (id, code, domain, ts, referrer, user_agent, ip, country, "
            "is_bot, request_id, rule, destination, visitor) "
            "SELECT $4::text || '-' || i, $4::text || (i % 100), NULL, "
            "$2::timestamptz + ($3::timestamptz - $2::timestamptz) * (i::float8 / $1::int), "
            "'https://ref.example/' || (i % 1000), 'Mozilla/5.0 (X11; Linux x86_64)', "
            "'203.0.113.' || (i % 250), 'DE', i % 10 = 0, 'req-' || i, NULL, NULL, md5(i::text) "
            "FROM generate_series(0, $1::int - 1) AS i",
            n,
            start,
            end,
            code,
        )
    finally:
        await conn.close()


def table(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body, newline="")))


def as_csv(c: Click) -> dict[str, str]:
    """A click as the CSV export writes it."""
    raw = {name: getattr(c, name) for name in COLUMNS}
    out = {}
    for name, value in raw.items():
        if value is None:
            out[name] = ""
        elif isinstance(value, bool):
            out[name] = str(value).lower()
        elif isinstance(value, datetime):
            out[name] = utc(value)
        elif isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
            out[name] = f"'{value}"
        else:
            out[name] = str(value)
    return out


def as_json(c: Click) -> dict[str, Any]:
    row = {name: getattr(c, name) for name in COLUMNS}
    row["ts"] = utc(c.ts)
    return row


def utc(value: datetime) -> str:
    """A time as both exports and the JSON answers spell it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_a_links_export_gives_the_figures_of_its_stats(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    at = datetime.now(UTC) - timedelta(hours=2)
    clicks = [
        click("fig", at, referrer="https://news.example/a", country="DE", destination=i % 2)
        for i in range(5)
    ]
    clicks += [click("fig", at, referrer=r, country="FR") for r in ("https://=x.example/", None)]
    clicks += [click("fig", at, domain=GO, country="US") for _ in range(3)]
    await publish(nc, clicks)

    async def counted() -> bool:
        r = await analytics.get("/api/stats/links/fig", params={"domain": GO})
        return r.json()["total"] == 3 and (
            (await analytics.get("/api/stats/links/fig")).json()["total"] == 7
        )

    await eventually(counted, what="10 clicks counted")
    query = {"interval": "hour", "from": f"{at:%Y-%m-%d}", "limit": "1"}
    stats = (await analytics.get("/api/stats/links/fig", params=query)).json()
    r = await analytics.get("/api/stats/links/fig/export", params=query)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    day = f"{at:%Y%m%d}T0000"
    assert r.headers["content-disposition"].startswith(f'attachment; filename="default_fig_{day}_')
    rows = table(r.text)
    assert rows[0] == {
        "section": "total",
        "key": "",
        "count": str(stats["total"]),
        "visitors": str(stats["visitors"]),
    }
    series = [(p["ts"], str(p["count"]), str(p["visitors"])) for p in stats["series"]]
    assert [(x["key"], x["count"], x["visitors"]) for x in rows if x["section"] == "series"] == (
        series
    )
    lists = {"referrers": "referrer", "countries": "country", "devices": "device"}
    for section, field in lists.items():
        expected = [(e[field], str(e["count"])) for e in stats[section]]
        assert [(x["key"], x["count"]) for x in rows if x["section"] == section] == expected
    sides = [
        (str(d["destination"]), str(d["count"]), str(d["visitors"])) for d in stats["destinations"]
    ]
    assert [
        (x["key"], x["count"], x["visitors"]) for x in rows if x["section"] == "destinations"
    ] == sides
    assert [c for _, c, _ in sides] == ["3", "2"]  # the A/B sides' clicks, 0 then 1
    others = {x["key"]: int(x["count"]) for x in rows if x["section"] == "others"}
    assert others == stats["others"]
    assert others["countries"] == 2  # limit=1: DE's 5 listed, FR's 2 left out
    # The other domain's link of the same code: its own figures.
    r = await analytics.get("/api/stats/links/fig/export", params={**query, "domain": GO})
    assert table(r.text)[0]["count"] == "3"
    assert f'filename="{GO}_fig_' in r.headers["content-disposition"]
    # The stats call's bounds are the export's.
    r = await analytics.get(
        "/api/stats/links/fig/export", params={"interval": "hour", "from": "2020-01-01"}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "from"
    # A key limited to GO sees only GO's link; a links-only key none.
    js = nc.jetstream()
    limited = await keys.create(js, "go-only", (keys.STATS_READ,), domains=(GO,))
    r = await analytics.get("/api/stats/links/fig/export", headers=bearer(limited))
    assert r.status_code == 404
    r = await analytics.get(
        "/api/stats/links/fig/export", params={"domain": GO}, headers=bearer(limited)
    )
    assert r.status_code == 200
    reader = await keys.create(js, "links-only", (keys.LINKS_READ,))
    r = await analytics.get("/api/stats/links/fig/export", headers=bearer(reader))
    assert r.status_code == 403
    doc = (await analytics.get("/api/openapi.json")).json()
    op = doc["paths"]["/api/stats/links/{code}/export"]["get"]
    assert list(op["responses"]["200"]["content"]) == ["text/csv; charset=utf-8"]
    assert op["x-scope"] == keys.STATS_READ
    assert {p["name"] for p in op["parameters"]} >= {"from", "to", "interval", "domain"}


async def recorded(db_url: str, n: int) -> None:
    async def done() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks") >= n

    await eventually(done, what=f"{n} clicks recorded")


async def test_the_recorder_exports_exactly_the_clicks_it_recorded(
    recorder_api: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    clicks = [
        click(
            "raw",
            now - timedelta(minutes=i),
            referrer=AWKWARD[i % len(AWKWARD)],
            user_agent="-curl" if i == 1 else "Mozilla/5.0",
            ip="203.0.113.7",
            country="DE",
            is_bot=i == 2,
            request_id=f"req-{i}",
            rule=1 if i == 3 else None,
            destination=1 if i == 4 else None,
            visitor=f"{i:032x}",
            domain=GO if i % 3 == 0 else None,
        )
        for i in range(12)
    ]
    clicks.append(click("other", now - timedelta(minutes=1)))
    clicks.append(click("raw", now - timedelta(days=3)))  # outside the default day
    await publish(nc, clicks)
    await recorded(db_url, len(clicks))
    in_day = sorted(clicks[:-1], key=lambda c: (c.ts, c.id))

    r = await recorder_api.get("/api/clicks", params={"to": (now + timedelta(seconds=1))})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="clicks_')
    assert r.text.splitlines()[0] == ",".join(COLUMNS)
    assert table(r.text) == [as_csv(c) for c in in_day]

    until = {"to": (now + timedelta(seconds=1)).isoformat()}
    for how in (
        {"params": {**until, "format": "ndjson"}},
        {"headers": {"accept": "application/x-ndjson"}, "params": until},
    ):
        r = await recorder_api.get("/api/clicks", **how)  # type: ignore[arg-type]
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = r.text.splitlines()
        assert [json.loads(line) for line in lines] == [as_json(c) for c in in_day]

    async def ids(**params: str) -> list[str]:
        r = await recorder_api.get("/api/clicks", params={**until, **params, "format": "ndjson"})
        assert r.status_code == 200, r.text
        return [json.loads(line)["id"] for line in r.text.splitlines()]

    raw = [c.id for c in in_day if c.code == "raw"]
    assert await ids(code="raw") == raw
    assert await ids(code="raw", domain=GO) == [c.id for c in in_day if c.domain == GO]
    assert await ids(domain=PUBLIC_HOST) == [c.id for c in in_day if c.domain is None]
    week = {"from": (now - timedelta(days=7)).isoformat()}
    assert len(await ids(**week)) == len(clicks)
    window = {"from": (now - timedelta(minutes=3)).isoformat(), "to": now.isoformat()}
    r = await recorder_api.get("/api/clicks", params={**window, "format": "ndjson"})
    assert [json.loads(x)["ts"] for x in r.text.splitlines()] == [
        utc(c.ts) for c in in_day if now - timedelta(minutes=3) <= c.ts < now
    ]


async def test_who_may_export_which_clicks(
    recorder_api: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    now = datetime.now(UTC)
    clicks = [
        click("mine", now, domain=GO),
        click("theirs", now),
        click("elsewhere", now, domain="x.test"),
    ]
    await publish(nc, clicks)
    await recorded(db_url, len(clicks))
    js = nc.jetstream()
    go_only = await keys.create(js, "go-only", (keys.STATS_READ,), domains=(GO,))
    both = await keys.create(js, "go-and-default", (keys.STATS_READ,), domains=(GO, PUBLIC_HOST))
    writer = await keys.create(js, "writer", (keys.LINKS_WRITE,))

    async def codes(key: str, **params: str) -> list[str]:
        r = await recorder_api.get(
            "/api/clicks", params={**params, "format": "ndjson"}, headers=bearer(key)
        )
        assert r.status_code == 200, r.text
        return sorted(json.loads(line)["code"] for line in r.text.splitlines())

    assert await codes(go_only) == ["mine"]
    assert await codes(both) == ["mine", "theirs"]
    assert await codes(both, domain=PUBLIC_HOST) == ["theirs"]
    r = await recorder_api.get("/api/clicks", params={"domain": "x.test"}, headers=bearer(go_only))
    assert r.status_code == 403
    r = await recorder_api.get("/api/clicks", headers=bearer(writer))
    assert r.status_code == 403
    assert "stats:read" in r.json()["detail"]
    for headers in ({"authorization": ""}, bearer("lf_" + "x" * 32)):
        r = await recorder_api.get("/api/clicks", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    # Health and the documents stay public; the document names the scope.
    for public in ("/healthz", "/api/docs"):
        assert (await recorder_api.get(public, headers={"authorization": ""})).status_code == 200
    doc = (await recorder_api.get("/api/openapi.json", headers={"authorization": ""})).json()
    op = doc["paths"]["/api/clicks"]["get"]
    assert op["x-scope"] == keys.STATS_READ
    assert set(op["responses"]["200"]["content"]) == {
        "text/csv; charset=utf-8",
        "application/x-ndjson",
    }
    assert {"401", "403", "422", "429"} <= set(op["responses"])


async def test_bad_export_parameters_are_422(recorder_api: httpx.AsyncClient) -> None:
    for params, field in (
        ({"from": "2026-01-01", "to": "2026-03-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"format": "xlsx"}, "format"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ({"domain": "a/b"}, "domain"),
    ):
        r = await recorder_api.get("/api/clicks", params=params)
        assert r.status_code == 422, params
        assert r.json()["errors"][0]["field"] == field
