"""Social previews: chat apps' fetchers get the link's card, people the
redirect; every value escaped; the fetch is stored as a bot's click."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.harness import eventually

EVIL = "\"'><script>alert(1)</script>&"
FETCHERS = {
    "Slack": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Discord": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "X": "Twitterbot/1.0",
    "Facebook": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "LinkedIn": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "WhatsApp": "WhatsApp/2.23.20.0",
    "Telegram": "TelegramBot (like TwitterBot)",
    "iMessage": "Mozilla/5.0 (Macintosh) facebookexternalhit/1.1 Facebot Twitterbot/1.0",
}
PERSON = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}


@pytest.mark.parametrize("app", list(FETCHERS))
async def test_a_fetcher_gets_the_card_with_every_value_escaped(
    gateway: httpx.AsyncClient, app: str
) -> None:
    preview = {
        "title": f"Title {EVIL}",
        "description": f"Text {EVIL}",
        "image": 'https://img.example/card.png?a=1&b="2"',
    }
    link = {"url": f"https://example.com/?q={EVIL[:3]}", "code": "card", "preview": preview}
    r = await gateway.post("/api/links", json=link)
    assert r.status_code == 201, r.text
    assert r.json()["preview"]["title"] == preview["title"]

    r = await gateway.get("/card", headers={"user-agent": FETCHERS[app]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
    assert "\"'>" not in page  # no value ends an attribute early
    assert '<meta property="og:title" content="Title &quot;&#x27;&gt;&lt;script&gt;' in page
    assert '<meta name="twitter:card" content="summary_large_image">' in page
    assert 'content="https://img.example/card.png?a=1&amp;b=&quot;2&quot;"' in page
    assert '<meta property="og:url" content="http://sho.rt/card">' in page
    assert (
        '<meta http-equiv="refresh" content="0; url=https://example.com/?q=&quot;&#x27;&gt;">'
        in page
    )

    # A person still gets the redirect.
    r = await gateway.get("/card", headers=PERSON)
    assert r.status_code == 302


async def test_the_fetch_is_a_bots_click_and_links_without_a_card_redirect(
    gateway: httpx.AsyncClient, recorder: None, db_url: str
) -> None:
    card = {"url": "https://example.com/", "code": "card", "preview": {"title": "Hello"}}
    assert (await gateway.post("/api/links", json=card)).status_code == 201
    plain = {"url": "https://example.com/", "code": "plain"}
    assert (await gateway.post("/api/links", json=plain)).status_code == 201
    slack = {"user-agent": FETCHERS["Slack"]}
    r = await gateway.get("/card", headers=slack)
    assert r.status_code == 200
    assert '<meta name="twitter:card" content="summary">' in r.text
    assert (await gateway.get("/plain", headers=slack)).status_code == 302
    assert (await gateway.head("/card", headers=slack)).content == b""

    async def recorded() -> bool:
        conn = await asyncpg.connect(db_url)
        try:
            n = await conn.fetchval("SELECT count(*) FROM clicks WHERE code = 'card'")
        finally:
            await conn.close()
        return bool(n == 2)

    await eventually(recorded, 10, "the fetches recorded")
    conn = await asyncpg.connect(db_url)
    try:
        bots = await conn.fetchval("SELECT bool_and(is_bot) FROM clicks WHERE code = 'card'")
    finally:
        await conn.close()
    assert bots is True


async def test_a_bad_preview_is_refused_naming_its_field(gateway: httpx.AsyncClient) -> None:
    for preview, field in (
        ({}, "preview"),
        ("a card", "preview"),
        ({"title": "x", "colour": "red"}, "preview"),
        ({"title": "x" * 201}, "preview.title"),
        ({"description": "x" * 501}, "preview.description"),
        ({"title": "   "}, "preview.title"),
        ({"image": "javascript:alert(1)"}, "preview.image"),
    ):
        r = await gateway.post(
            "/api/links", json={"url": "https://example.com/", "preview": preview}
        )
        assert r.status_code == 422, preview
        assert r.json()["errors"][0]["field"] == field
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/", "code": "x-1", "preview": {"title": "t"}}
    )
    assert r.status_code == 201
    r = await gateway.patch("/api/links/x-1", json={"preview": None})
    assert r.json()["preview"] is None
