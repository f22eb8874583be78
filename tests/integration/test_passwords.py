"""Password-protected links against real servers: the form without a click,
a wrong password's 401, the right one's 303 with its click already in
JetStream, the limit on wrong tries, the remembering cookie, and the hash
kept out of everything but the link's row and its KV entry."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
import pytest
from nats.aio.client import Client

from shared.contracts import LinkEntry
from shared.jetstream import topology
from tests.harness import eventually
from tests.integration.conftest import CacheRefresher

SECRET = "correct horse battery"
TARGET = "https://example.com/secret-plans"
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def protect(gateway: httpx.AsyncClient, code: str, **fields: object) -> dict[str, object]:
    r = await gateway.post(
        "/api/links", json={"url": TARGET, "code": code, "password": SECRET, **fields}
    )
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


async def clicks_in_stream(nc: Client, code: str) -> int:
    info = await nc.jetstream().stream_info(topology.CLICKS, subjects_filter=f"clicks.{code}")
    return (info.state.subjects or {}).get(f"clicks.{code}", 0)


async def recorded(db_url: str, code: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM clicks WHERE code = $1", code)
    finally:
        await conn.close()
    return n


def assert_form(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-robots-tag"] == "noindex"
    assert "style-src 'unsafe-inline'" in r.headers["content-security-policy"]
    page = r.text
    assert '<label for="password">' in page
    assert '<input id="password" name="password" type="password"' in page
    assert '<button type="submit">' in page
    assert "<script" not in page.lower()
    assert "example.com" not in page
    assert "secret-plans" not in page
    assert "location" not in r.headers


async def test_the_form_is_served_without_a_click(
    gateway: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    link = await protect(gateway, "vault")
    assert link["password_protected"] is True
    assert "password" not in link
    assert "$argon2" not in str(link)

    assert_form(await gateway.get("/vault"), 200)
    head = await gateway.head("/vault")
    assert head.status_code == 200
    assert head.content == b""
    assert await clicks_in_stream(nc, "vault") == 0

    conn = await asyncpg.connect(db_url)
    try:
        digest = await conn.fetchval("SELECT password_hash FROM links WHERE code = 'vault'")
    finally:
        await conn.close()
    assert digest.startswith("$argon2id$")


async def test_wrong_then_right_password_and_the_cookie(
    gateway: httpx.AsyncClient,
    nc: Client,
    db_url: str,
    recorder: None,
    cache_refresher: CacheRefresher,
) -> None:
    await protect(gateway, "vault", forward_query=True)
    wrong = await gateway.post("/vault?ref=mail", data={"password": "not the one"})
    assert_form(wrong, 401)
    assert 'role="alert"' in wrong.text
    assert "not right" in wrong.text
    assert await clicks_in_stream(nc, "vault") == 0

    right = await gateway.post("/vault?ref=mail", data={"password": SECRET})
    assert right.status_code == 303
    assert right.headers["location"] == f"{TARGET}?ref=mail"
    # The click was published (and acknowledged) before the 303 was sent.
    assert await clicks_in_stream(nc, "vault") == 1
    await eventually(lambda: recorded(db_url, "vault"), what="the click recorded")
    assert await recorded(db_url, "vault") == 1

    cookie = right.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/vault", "Max-Age=86400"):
        assert flag in cookie, cookie
    # The client keeps it for /vault: the next visit redirects at once.
    again = await gateway.get("/vault")
    assert again.status_code == 302
    assert again.headers["location"] == TARGET
    assert await clicks_in_stream(nc, "vault") == 2

    # Not for another protected link, nor once the password changed.
    await protect(gateway, "other")
    value = cookie.split(";")[0]
    other = await gateway.get("/other", headers={"cookie": value})
    assert other.status_code == 200
    forged = value[:-4] + ("0000" if not value.endswith("0000") else "1111")
    gateway.cookies.clear()
    assert (await gateway.get("/vault", headers={"cookie": forged})).status_code == 200
    r = await gateway.patch("/api/links/vault", json={"password": "another secret"})
    assert r.status_code == 200
    assert r.json()["password_protected"] is True

    async def forgotten() -> bool:
        return (await gateway.get("/vault", headers={"cookie": value})).status_code == 200

    await eventually(forgotten, what="the old cookie refused after the new password")


async def test_the_sixth_wrong_try_in_a_minute_is_refused(gateway: httpx.AsyncClient) -> None:
    await protect(gateway, "vault")
    for _ in range(5):
        assert (await gateway.post("/vault", data={"password": "guessing!"})).status_code == 401
    refused = await gateway.post("/vault", data={"password": SECRET})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Too many wrong tries" in refused.text
    # Per link: another link from the same address is still open to try.
    await protect(gateway, "other")
    assert (await gateway.post("/other", data={"password": SECRET})).status_code == 303


async def test_only_a_form_with_a_password_is_read(gateway: httpx.AsyncClient) -> None:
    await protect(gateway, "vault")
    r = await gateway.post("/vault", json={"password": SECRET})
    assert r.status_code == 415
    r = await gateway.post("/vault", content=b"password=" + b"x" * 5000, headers=FORM)
    assert r.status_code == 413
    # A POST to a link without a password is not a redirect.
    assert (await gateway.post("/api/links", json={"url": TARGET, "code": "open"})).is_success
    assert (await gateway.post("/open", data={"password": SECRET})).status_code in (404, 405)


async def test_the_hash_stays_out_of_events_history_and_answers(
    gateway: httpx.AsyncClient, nc: Client, cache_refresher: CacheRefresher
) -> None:
    r = await gateway.post("/api/links", json={"url": TARGET, "code": "later"})
    assert r.status_code == 201
    assert r.json()["password_protected"] is False
    r = await gateway.patch("/api/links/later", json={"password": SECRET})
    assert r.status_code == 200, r.text
    assert r.json()["password_protected"] is True
    assert "$argon2" not in r.text

    async def asks() -> bool:
        return (await gateway.get("/later")).status_code == 200

    await eventually(asks, what="the form once the refresher applied the change")
    assert_form(await gateway.get("/later"), 200)

    js = nc.jetstream()
    event = await js.get_last_msg(topology.LINKS, "links.updated")
    payload = msgspec.json.decode(event.data)
    assert payload["password_protected"] is True
    assert "password_hash" not in payload
    assert "password" not in payload
    assert b"argon2" not in event.data

    # The cache-refresher wrote the entry from the row: the hash reaches
    # every gateway's map through KV, and only there.
    kv = await js.key_value(topology.KV_LINKS)

    async def protected_in_kv() -> LinkEntry | None:
        entry = msgspec.json.decode((await kv.get("later")).value or b"", type=LinkEntry)
        return entry if entry.version == 2 else None

    entry = await eventually(protected_in_kv, what="the protected entry in KV")
    assert entry.password_hash is not None
    assert entry.password_hash.startswith("$argon2id$")

    r = await gateway.patch("/api/links/later", json={"password": None})
    assert r.status_code == 200
    assert r.json()["password_protected"] is False

    async def redirects() -> bool:
        return (await gateway.get("/later")).status_code == 302

    await eventually(redirects, what="the redirect once the password is gone")
    event = await js.get_last_msg(topology.LINKS, "links.updated")
    assert msgspec.json.decode(event.data)["password_protected"] is False

    async def open_in_kv() -> bool:
        held = msgspec.json.decode((await kv.get("later")).value or b"", type=LinkEntry)
        return held.version == 3 and held.password_hash is None

    await eventually(open_in_kv, what="the entry without a password in KV")

    history = await gateway.get("/api/links/later/history")
    assert history.status_code == 200
    assert "argon2" not in history.text
    assert [v["password_protected"] for v in history.json()["items"]] == [False, True, False]
    listed = await gateway.get("/api/links")
    assert "argon2" not in listed.text


@pytest.mark.parametrize(
    ("value", "creating"),
    [("x" * 7, True), ("x" * 129, True), (12345678, True), ("x" * 7, False), ([], False)],
)
async def test_a_password_of_the_wrong_shape_is_a_422_naming_it(
    gateway: httpx.AsyncClient, value: object, creating: bool
) -> None:
    if creating:
        r = await gateway.post("/api/links", json={"url": TARGET, "password": value})
    else:
        assert (await gateway.post("/api/links", json={"url": TARGET, "code": "edit"})).is_success
        r = await gateway.patch("/api/links/edit", json={"password": value})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["password"]
    assert str(value) not in r.text or value == []


async def test_eight_and_128_characters_are_passwords(gateway: httpx.AsyncClient) -> None:
    for code, password in (("short", "x" * 8), ("long", "y" * 128)):
        await gateway.post("/api/links", json={"url": TARGET, "code": code, "password": password})
        r = await gateway.post(f"/{code}", data={"password": password})
        assert r.status_code == 303, r.text
