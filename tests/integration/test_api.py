"""Every invalid input of the SPEC's rules gets the right status and a problem+json body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import assert_only_the_web_app


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "example.com/x"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https://example.com/" + "a" * 2048}, "url"),
        ({"url": "http://sho.rt/loop"}, "url"),
        ({"url": "http://SHO.RT:80/loop"}, "url"),
        ({"url": "https://example.com/a b"}, "url"),
        ({"url": f"https://{'ü' * 64}.example/"}, "url"),  # a label too long for DNS
        ({"url": 42}, "url"),
        ({"url": "https://example.com", "code": "ab"}, "code"),
        ({"url": "https://example.com", "code": "a" * 65}, "code"),
        ({"url": "https://example.com", "code": "bad/code"}, "code"),
        ({"url": "https://example.com", "code": "api"}, "code"),
        ({"url": "https://example.com", "code": "metrics"}, "code"),
        ({"url": "https://example.com", "redirect_type": 303}, "redirect_type"),
        ({"url": "https://example.com", "redirect_type": "302"}, "redirect_type"),
        ({"url": "https://example.com", "expires_at": "tomorrow"}, "expires_at"),
        ({"url": "https://example.com", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"url": "https://example.com", "tags": "a,b"}, "tags"),
        ({"url": "https://example.com", "tags": [""]}, "tags"),
        ({"url": "https://example.com", "version": 7}, "version"),
    ],
)
async def test_create_rejects_invalid_fields(
    gateway: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    assert_problem(await gateway.post("/api/links", json=body), 422, field)


async def test_create_rejects_non_object(gateway: httpx.AsyncClient) -> None:
    assert_problem(await gateway.post("/api/links", json=["https://example.com"]), 422, "body")


@pytest.mark.parametrize("body", [b'{"url": ', b'{"url": "https://example.com/\xff"}'])
async def test_malformed_json_is_400(gateway: httpx.AsyncClient, body: bytes) -> None:
    # The second is not UTF-8, which msgspec reports with a UnicodeDecodeError.
    r = await gateway.post("/api/links", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 400)


async def test_body_over_16k_is_413(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com", "tags": ["x" * 60] * 300}
    )
    assert_problem(r, 413)


async def test_code_taken_is_409_case_sensitive(gateway: httpx.AsyncClient) -> None:
    first = await gateway.post("/api/links", json={"url": "https://a.example", "code": "Same"})
    assert first.status_code == 201
    assert_problem(
        await gateway.post("/api/links", json={"url": "https://b.example", "code": "Same"}), 409
    )
    other_case = await gateway.post("/api/links", json={"url": "https://c.example", "code": "same"})
    assert other_case.status_code == 201


async def test_missing_links_are_404(gateway: httpx.AsyncClient) -> None:
    assert_problem(await gateway.get("/api/links/missing"), 404)
    assert_problem(await gateway.patch("/api/links/missing", json={"tags": []}), 404)
    assert_problem(await gateway.delete("/api/links/missing"), 404)


async def test_a_long_unknown_code_is_not_echoed_whole(gateway: httpx.AsyncClient) -> None:
    long = "a" * 5000
    for r in (await gateway.get(f"/{long}"), await gateway.get(f"/api/links/{long}")):
        detail = assert_problem(r, 404)["detail"]
        assert len(detail) < 200, detail
        assert "a" * 64 in detail
        assert "5,000 characters" in detail


async def test_patch_validates_and_bumps_version(gateway: httpx.AsyncClient) -> None:
    await gateway.post("/api/links", json={"url": "https://example.com", "code": "pat"})
    assert_problem(await gateway.patch("/api/links/pat", json={"url": "nope"}), 422, "url")
    assert_problem(await gateway.patch("/api/links/pat", json={"code": "other"}), 422, "code")
    r = await gateway.patch(
        "/api/links/pat",
        json={"redirect_type": 301, "tags": ["t"], "expires_at": "2099-01-01T00:00:00Z"},
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["version"], body["redirect_type"], body["tags"]) == (2, 301, ["t"])
    assert body["expires_at"] == "2099-01-01T00:00:00.000Z"


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=%%%"])
async def test_list_rejects_bad_query(gateway: httpx.AsyncClient, query: str) -> None:
    assert_problem(await gateway.get(f"/api/links?{query}"), 422)


async def test_list_pages_with_cursor_and_tag(gateway: httpx.AsyncClient) -> None:
    for i in range(5):
        r = await gateway.post(
            "/api/links",
            json={
                "url": f"https://example.com/{i}",
                "code": f"page{i}",
                "tags": ["even"] if i % 2 == 0 else [],
            },
        )
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await gateway.get("/api/links", params=params)).json()
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"page{i}" for i in reversed(range(5))]
    tagged = (await gateway.get("/api/links", params={"tag": "even"})).json()
    assert [i["code"] for i in tagged["items"]] == ["page4", "page2", "page0"]


async def test_deleted_code_can_be_taken_again_with_higher_version(
    gateway: httpx.AsyncClient,
) -> None:
    await gateway.post("/api/links", json={"url": "https://one.example", "code": "again"})
    assert (await gateway.delete("/api/links/again")).status_code == 204
    r = await gateway.post("/api/links", json={"url": "https://two.example", "code": "again"})
    assert r.status_code == 201
    assert r.json()["version"] == 3


async def test_health_endpoints(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/healthz")).status_code == 200
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = await gateway.get("/metrics")
    assert "linkflow_redirects_total" in metrics.text


async def test_only_the_web_apps_origin_may_call_from_a_browser(
    gateway: httpx.AsyncClient,
) -> None:
    """CORS: the app (analytics' /app/, at LINKFLOW_APP_URL) calls the links
    API from another origin; no other site's page may."""
    await assert_only_the_web_app(gateway, "/api/links", "POST")


async def test_the_list_searches_code_and_target(gateway: httpx.AsyncClient) -> None:
    for code, url in (
        ("spring", "https://example.com/a"),
        ("other", "https://SPRING.example/b"),
        ("none1", "https://example.com/c"),
        ("pct", "https://example.com/100%25"),
    ):
        assert (
            await gateway.post("/api/links", json={"url": url, "code": code})
        ).status_code == 201
    found = (await gateway.get("/api/links", params={"q": "spring"})).json()["items"]
    assert sorted(x["code"] for x in found) == ["other", "spring"]
    # % and _ are the user's characters, not patterns.
    assert (await gateway.get("/api/links", params={"q": "%"})).json()["items"][0]["code"] == "pct"
    assert len((await gateway.get("/api/links", params={"q": "%"})).json()["items"]) == 1
    assert (await gateway.get("/api/links", params={"q": "_"})).json()["items"] == []
    r = await gateway.get("/api/links", params={"q": "x" * 201})
    assert r.status_code == 422
