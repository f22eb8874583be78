"""``POST /api/links/import``: valid rows become links, refused rows are
reported by line, and nothing else changes."""

from __future__ import annotations

import json

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.jetstream import topology
from tests.harness import count, eventually

CSV = """url,code,redirect_type,expires_at,tags
https://example.com/a,imp-a,301,,"news,sport"
https://example.com/b,,,,

https://example.com/c,imp-c,,2099-01-01T00:00:00Z,
ftp://example.com/d,imp-d,,,
https://example.com/e,x,,,
https://example.com/f,imp-a,,,
https://example.com/g,taken,,,
https://example.com/same,same,,,
https://example.com/h,imp-h,303,,
https://example.com/i,imp-i,,,,extra
"""


async def links_created(nc: Client) -> list[bytes]:
    seen: list[bytes] = []

    async def on(msg: Msg) -> None:
        seen.append(msg.data)

    await nc.subscribe("links.created", cb=on)
    await nc.flush()
    return seen


async def test_valid_rows_are_imported_and_refused_rows_reported(
    gateway: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    for code, url in (("taken", "https://example.com/other"), ("same", "https://example.com/same")):
        r = await gateway.post("/api/links", json={"url": url, "code": code})
        assert r.status_code == 201
    announced = await links_created(nc)
    r = await gateway.post("/api/links/import", content=CSV, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == 3
    assert report["skipped"] == 1
    errors = {e["line"]: e["message"] for e in report["errors"]}
    assert sorted(errors) == [6, 7, 8, 9, 11, 12]
    assert "url: must be an absolute http or https URL" in errors[6]
    assert "code: must match" in errors[7]
    assert errors[8] == "code 'imp-a' is already on line 2"
    assert errors[9] == "code 'taken' is already taken"
    assert "redirect_type: must be one of 301, 302, 307, 308" in errors[11]
    assert errors[12] == "1 cell(s) more than the header names"
    lines = {item["line"]: item["code"] for item in report["links"]}
    assert lines[2] == "imp-a"
    assert lines[5] == "imp-c"
    generated = lines[3]
    assert len(generated) == 7

    a = (await gateway.get("/api/links/imp-a")).json()
    assert a["redirect_type"] == 301
    assert a["tags"] == ["news", "sport"]
    assert (await gateway.get("/api/links/imp-c")).json()[
        "expires_at"
    ] == "2099-01-01T00:00:00.000Z"
    # Each is a normal create: it redirects, and links.created went out.
    for code, target in (("imp-a", "/a"), (generated, "/b"), ("imp-c", "/c")):
        r = await gateway.get(f"/{code}")
        assert r.headers["location"] == f"https://example.com{target}"

    imported = ["imp-a", generated, "imp-c"]

    def codes() -> list[str]:
        # The two links created before the subscription may still come: a
        # busy gateway's publish goes out when its client flushes.
        return sorted(c for m in announced if (c := json.loads(m)["code"]) in imported)

    async def all_announced() -> bool:
        return codes() == sorted(imported)

    await eventually(all_announced, 30, "three links.created")
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    assert {"imp-a", "imp-c", generated} <= set(await kv.keys())
    # Refused rows changed nothing: the taken code keeps its own target.
    assert (await gateway.get("/api/links/taken")).json()["url"] == "https://example.com/other"
    assert await count(db_url, "SELECT count(*) FROM links") == 5

    again = (await gateway.post("/api/links/import", content=CSV)).json()
    # Rows with a code are skipped the second time; a row without one is a new link.
    assert again["imported"] == 1
    assert again["skipped"] == 3


async def test_a_body_that_is_not_a_link_csv_is_a_400(gateway: httpx.AsyncClient) -> None:
    for body, says in [
        (b"", "header with a url column"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"url,code\nhttps://example.com/\x00,abc\n", "NUL"),
        (b"code,target\nabc,https://example.com\n", "header with a url column"),
        (b"url,colour\nhttps://example.com,red\n", "unknown column 'colour'"),
        (b"url,url\nhttps://example.com,https://example.com\n", "named twice"),
        (b'url,code\n"https://example.com,abc\n', "not a CSV file"),
    ]:
        r = await gateway.post("/api/links/import", content=body)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert says in r.json()["detail"], (body, r.json())
    assert (await gateway.get("/api/links")).json()["items"] == []


async def test_odd_cells_are_row_errors_not_server_errors(gateway: httpx.AsyncClient) -> None:
    body = (
        "url,code,redirect_type,expires_at\n"
        "https://example.com/1,odd-1,\u00b2,\n"
        f"https://example.com/2,odd-2,{'9' * 5000},\n"
        "https://example.com/3,odd-3,,0001-01-01T00:00:00+14:00\n"
        "https://example.com/4,odd-4,307,\n"
    )
    r = await gateway.post("/api/links/import", content=body.encode())
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == 1
    assert [e["line"] for e in report["errors"]] == [2, 3, 4]
    assert "expires_at: is out of range" in report["errors"][2]["message"]
    r = await gateway.post(
        "/api/links",
        json={"url": "https://example.com/5", "expires_at": "0001-01-01T00:00:00+14:00"},
    )
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "expires_at", "message": "is out of range"}]


async def test_more_than_ten_thousand_rows_is_a_413(gateway: httpx.AsyncClient) -> None:
    body = "url\n" + "https://example.com/\n" * 10_001
    r = await gateway.post("/api/links/import", content=body)
    assert r.status_code == 413
    assert "more than 10,000 rows" in r.json()["detail"]
    assert (await gateway.get("/api/links")).json()["items"] == []


async def test_a_body_over_the_limit_is_a_413(gateway: httpx.AsyncClient) -> None:
    row = b"https://example.com/" + b"x" * 80 + b"\n"
    body = b"url\n" + row * (10 * 1024 * 1024 // len(row) + 1)
    r = await gateway.post("/api/links/import", content=body)
    assert r.status_code == 413
    assert (await gateway.get("/api/links")).json()["items"] == []


async def test_ten_thousand_rows(gateway: httpx.AsyncClient, nc: Client, db_url: str) -> None:
    announced = await links_created(nc)
    body = "url,code\n" + "".join(f"https://example.com/{i},bulk-{i}\n" for i in range(10_000))
    r = await gateway.post("/api/links/import", content=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 10_000
    assert r.json()["errors"] == []
    assert await count(db_url, "SELECT count(*) FROM links") == 10_000
    # One KV entry per link. (nats-py 2.16's kv.keys() raised NoKeysError
    # here with 10,000 entries in the bucket; the stream's count is exact.)
    kv = await nc.jetstream().stream_info(f"KV_{topology.KV_LINKS}")
    assert kv.state.messages == 10_000

    async def all_announced() -> bool:
        return len(announced) == 10_000

    await eventually(all_announced, 10, "10,000 links.created")
    assert (await gateway.get("/bulk-9999")).headers["location"] == "https://example.com/9999"
