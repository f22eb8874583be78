"""``GET /api/links/{code}/history``: every version, who made it, and an
answer to "where did this link point then" after the link is gone."""

from __future__ import annotations

from datetime import datetime

import httpx
from nats.aio.client import Client

from shared.http import keys
from tests.harness import bearer
from tests.integration.test_api import assert_problem


async def test_create_patch_patch_delete_are_four_versions_with_their_keys(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    editor = await keys.create(nc.jetstream(), "editor", (keys.LINKS_WRITE, keys.LINKS_READ))
    r = await gateway.post("/api/links", json={"url": "https://example.com/one", "code": "hist"})
    assert r.status_code == 201, r.text
    r = await gateway.patch(
        "/api/links/hist",
        json={"url": "https://example.com/two"},
        headers=bearer(editor),
    )
    assert r.status_code == 200, r.text
    r = await gateway.patch("/api/links/hist", json={"redirect_type": 301, "tags": ["x"]})
    assert r.status_code == 200, r.text
    assert (await gateway.delete("/api/links/hist", headers=bearer(editor))).status_code == 204

    r = await gateway.get("/api/links/hist/history")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["version"] for i in items] == [4, 3, 2, 1]
    assert [i["url"] for i in items] == [
        "https://example.com/two",
        "https://example.com/two",
        "https://example.com/two",
        "https://example.com/one",
    ]
    assert [i["redirect_type"] for i in items] == [301, 301, 302, 302]
    assert [i["changed_by"] for i in items] == ["editor", "admin", "editor", "admin"]
    assert items[0]["deleted_at"] is not None
    assert all(i["deleted_at"] is None for i in items[1:])
    changed = [datetime.fromisoformat(i["updated_at"]) for i in items]
    assert changed == sorted(changed, reverse=True)

    # Where did it point just after the first PATCH? The newest version
    # changed at or before that instant.
    at = changed[2]
    then = next(i for i in items if datetime.fromisoformat(i["updated_at"]) <= at)
    assert then["url"] == "https://example.com/two"
    assert then["version"] == 2

    # The code taken again: its history goes on, the old versions kept.
    r = await gateway.post("/api/links", json={"url": "https://example.com/new", "code": "hist"})
    assert r.status_code == 201, r.text
    items = (await gateway.get("/api/links/hist/history")).json()["items"]
    assert [i["version"] for i in items] == [5, 4, 3, 2, 1]
    assert items[0]["url"] == "https://example.com/new"
    assert items[0]["deleted_at"] is None


async def test_imported_links_have_their_first_version(gateway: httpx.AsyncClient) -> None:
    csv = b"url,code\nhttps://example.com/imp,histimp\n"
    r = await gateway.post("/api/links/import", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    items = (await gateway.get("/api/links/histimp/history")).json()["items"]
    assert [(i["version"], i["url"], i["changed_by"]) for i in items] == [
        (1, "https://example.com/imp", "admin")
    ]


async def test_a_code_never_created_has_no_history(gateway: httpx.AsyncClient) -> None:
    assert_problem(await gateway.get("/api/links/neverwas/history"), 404)


async def test_history_needs_links_read(gateway: httpx.AsyncClient, nc: Client) -> None:
    r = await gateway.post("/api/links", json={"url": "https://example.com/", "code": "histkey"})
    assert r.status_code == 201
    stats_only = await keys.create(nc.jetstream(), "stats", (keys.STATS_READ,))
    r = await gateway.get("/api/links/histkey/history", headers=bearer(stats_only))
    assert_problem(r, 403)
