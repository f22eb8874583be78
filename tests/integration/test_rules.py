"""Redirect rules and query forwarding through the gateway: every condition,
combinations (first match wins), the click's ``rule``, every invalid rule
named, and forwarding that cannot move the visitor to another host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.contracts import Click
from tests.agents import IPAD, IPHONE, LINUX, MAC, PIXEL, WINDOWS
from tests.harness import eventually
from tests.integration.test_api import assert_problem


async def make(gateway: httpx.AsyncClient, code: str, **fields: Any) -> dict[str, Any]:
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/default", "code": code, **fields}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def goes_to(
    gateway: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> str:
    r = await gateway.get(path, headers={"user-agent": WINDOWS, **(headers or {})})
    assert r.status_code == 302, r.text
    return r.headers["location"]


def rule(url: str, **when: Any) -> dict[str, Any]:
    return {"when": when, "url": url}


@pytest.mark.parametrize(
    ("when", "headers", "path", "matches"),
    [
        ({"device": ["mobile"]}, {"user-agent": IPHONE}, "", True),
        ({"device": ["mobile"]}, {"user-agent": PIXEL}, "", True),
        ({"device": ["mobile"]}, {"user-agent": IPAD}, "", False),
        ({"device": ["tablet"]}, {"user-agent": IPAD}, "", True),
        ({"device": ["desktop"]}, {"user-agent": MAC}, "", True),
        ({"device": ["desktop", "tablet"]}, {"user-agent": IPHONE}, "", False),
        ({"os": ["ios"]}, {"user-agent": IPAD}, "", True),
        ({"os": ["android"]}, {"user-agent": PIXEL}, "", True),
        ({"os": ["windows"]}, {"user-agent": WINDOWS}, "", True),
        ({"os": ["macos"]}, {"user-agent": MAC}, "", True),
        ({"os": ["linux"]}, {"user-agent": LINUX}, "", True),
        ({"os": ["linux"]}, {"user-agent": MAC}, "", False),
        ({"language": ["de"]}, {"accept-language": "de-CH, de;q=0.9, en;q=0.8"}, "", True),
        # The highest quality wins, not the first listed.
        ({"language": ["de"]}, {"accept-language": "en;q=0.5, de;q=0.9"}, "", True),
        ({"language": ["de"]}, {"accept-language": "en, de;q=0.9"}, "", False),
        ({"language": ["de"]}, {"accept-language": "de;q=0, en;q=0.1"}, "", False),
        ({"language": ["de"]}, {}, "", False),
        ({"country": ["DE", "AT"]}, {"cf-ipcountry": "AT"}, "", True),
        ({"country": ["DE"]}, {"cf-ipcountry": "FR"}, "", False),
        ({"country": ["DE"]}, {}, "", False),  # 127.0.0.1 has no country
        ({"query": {"src": "news"}}, {}, "?src=news&x=1", True),
        ({"query": {"src": "news"}}, {}, "?src=mail&src=news", True),
        ({"query": {"src": "news"}}, {}, "?src=newsletter", False),
        ({"query": {"src": "news", "x": "1"}}, {}, "?src=news", False),
        ({"after": "2020-01-01T00:00:00Z"}, {}, "", True),
        ({"after": "2999-01-01T00:00:00Z"}, {}, "", False),
        ({"before": "2999-01-01T00:00:00Z"}, {}, "", True),
        ({"before": "2020-01-01T00:00:00Z"}, {}, "", False),
        ({"after": "2020-01-01T00:00:00Z", "before": "2999-01-01T00:00:00Z"}, {}, "", True),
        # Every condition must hold.
        ({"device": ["mobile"], "language": ["fr"]}, {"user-agent": IPHONE}, "", False),
        (
            {"device": ["mobile"], "language": ["fr"]},
            {"user-agent": IPHONE, "accept-language": "fr-FR"},
            "",
            True,
        ),
    ],
)
async def test_each_condition(
    gateway: httpx.AsyncClient,
    when: dict[str, Any],
    headers: dict[str, str],
    path: str,
    matches: bool,
) -> None:
    code = f"r{abs(hash((str(when), str(headers), path))) % 10**9}"
    await make(gateway, code, rules=[rule("https://example.com/ruled", **when)])
    expected = "https://example.com/ruled" if matches else "https://example.com/default"
    assert await goes_to(gateway, f"/{code}{path}", headers) == expected


async def test_the_first_matching_rule_wins_and_the_click_names_it(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    seen: list[Click] = []

    async def on(msg: Msg) -> None:
        seen.append(msgspec.json.decode(msg.data, type=Click))

    await nc.subscribe("clicks.first", cb=on)
    await nc.flush()
    await make(
        gateway,
        "first",
        rules=[
            rule("https://example.com/fr", language=["fr"]),
            rule("https://example.com/mobile", device=["mobile"]),
            rule("https://example.com/ios", os=["ios"]),
        ],
    )
    assert await goes_to(gateway, "/first", {"user-agent": IPHONE}) == "https://example.com/mobile"
    assert (
        await goes_to(gateway, "/first", {"user-agent": IPHONE, "accept-language": "fr"})
        == "https://example.com/fr"
    )
    assert await goes_to(gateway, "/first", {"user-agent": IPAD}) == "https://example.com/ios"
    assert await goes_to(gateway, "/first") == "https://example.com/default"

    async def four() -> bool:
        return len(seen) == 4

    await eventually(four, what="four clicks")
    assert [c.rule for c in seen] == [1, 0, 2, None]


async def test_a_rule_starts_and_ends_on_time_for_visitors_seen_before(
    gateway: httpx.AsyncClient,
) -> None:
    """The gateway remembers its decisions per kind of visitor; crossing a
    rule's after or before instant must still change them."""
    start = datetime.now(UTC) + timedelta(seconds=1)
    end = start + timedelta(seconds=1)
    window = {"after": start.isoformat(), "before": end.isoformat()}
    await make(gateway, "timed", rules=[rule("https://example.com/now", **window)])
    assert await goes_to(gateway, "/timed") == "https://example.com/default"

    async def lands(where: str) -> bool:
        return await goes_to(gateway, "/timed") == where

    await eventually(lambda: lands("https://example.com/now"), 10, "the rule to start")
    assert datetime.now(UTC) >= start
    await eventually(lambda: lands("https://example.com/default"), 10, "the rule to end")
    assert datetime.now(UTC) >= end


async def test_the_link_shows_its_rules_and_history_keeps_them(
    gateway: httpx.AsyncClient,
) -> None:
    rules = [rule("https://example.com/m", device=["mobile"], query={"a": "b"})]
    made = await make(gateway, "shown", rules=rules, forward_query=True)
    assert made["rules"] == rules
    assert made["forward_query"] is True
    assert made["max_visits"] is None
    r = await gateway.patch("/api/links/shown", json={"rules": []})
    assert r.json()["rules"] == []
    history = (await gateway.get("/api/links/shown/history")).json()["items"]
    assert [h["rules"] for h in history] == [[], rules]


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ("nope", "rules"),
        ([{"when": {"device": ["mobile"]}, "url": "https://e.example/"}] * 21, "rules"),
        (["x"], "rules[0]"),
        ([{"when": {"device": ["mobile"]}}], "rules[0].url"),
        ([{"when": {"device": ["mobile"]}, "url": "ftp://e.example/"}], "rules[0].url"),
        ([{"when": {"device": ["mobile"]}, "url": "http://sho.rt/loop"}], "rules[0].url"),
        ([{"url": "https://e.example/"}], "rules[0].when"),
        ([{"when": {}, "url": "https://e.example/"}], "rules[0].when"),
        ([{"when": {"colour": ["red"]}, "url": "https://e.example/"}], "rules[0].when.colour"),
        ([{"when": {"device": ["phone"]}, "url": "https://e.example/"}], "rules[0].when.device"),
        ([{"when": {"device": []}, "url": "https://e.example/"}], "rules[0].when.device"),
        ([{"when": {"os": ["beos"]}, "url": "https://e.example/"}], "rules[0].when.os"),
        (
            [{"when": {"language": ["deutsch"]}, "url": "https://e.example/"}],
            "rules[0].when.language",
        ),
        ([{"when": {"country": ["DEU"]}, "url": "https://e.example/"}], "rules[0].when.country"),
        ([{"when": {"query": {"a": 1}}, "url": "https://e.example/"}], "rules[0].when.query"),
        ([{"when": {"query": {}}, "url": "https://e.example/"}], "rules[0].when.query"),
        ([{"when": {"after": "yesterday"}, "url": "https://e.example/"}], "rules[0].when.after"),
        (
            [
                {
                    "when": {"after": "2030-01-01T00:00:00Z", "before": "2029-01-01T00:00:00Z"},
                    "url": "https://e.example/",
                }
            ],
            "rules[0].when.before",
        ),
        (
            [
                {"when": {"device": ["mobile"]}, "url": "https://e.example/"},
                {"when": {"os": ["ios"]}, "url": "https://e.example/", "extra": 1},
            ],
            "rules[1].extra",
        ),
    ],
)
async def test_an_invalid_rule_is_named(gateway: httpx.AsyncClient, rules: Any, field: str) -> None:
    r = await gateway.post("/api/links", json={"url": "https://example.com/", "rules": rules})
    assert_problem(r, 422, field)
    # Nothing was created: the same refusal on PATCH leaves the link alone.
    await make(gateway, "intact")
    r = await gateway.patch("/api/links/intact", json={"rules": rules})
    assert_problem(r, 422, field)
    assert (await gateway.get("/api/links/intact")).json()["version"] == 1
    assert (await gateway.delete("/api/links/intact")).status_code == 204


@pytest.mark.parametrize(
    ("target", "query", "location"),
    [
        ("https://example.com/p", "a=1&b=2", "https://example.com/p?a=1&b=2"),
        ("https://example.com/p?own=1", "a=1", "https://example.com/p?own=1&a=1"),
        ("https://example.com/p?own=1#top", "a=1", "https://example.com/p?own=1&a=1#top"),
        ("https://example.com/p#top", "a=1", "https://example.com/p?a=1#top"),
        ("https://example.com/p", "q=caf%C3%A9&x=%2F", "https://example.com/p?q=caf%C3%A9&x=%2F"),
        ("https://example.com/p", "q=100%", "https://example.com/p?q=100%25"),
        ("https://example.com", "x=1", "https://example.com?x=1"),
        ("https://example.com/p", "", "https://example.com/p"),
    ],
)
async def test_forwarded_query(
    gateway: httpx.AsyncClient, target: str, query: str, location: str
) -> None:
    code = f"f{abs(hash((target, query))) % 10**9}"
    await make(gateway, code, url=target, forward_query=True)
    path = f"/{code}?{query}" if query else f"/{code}"
    assert await goes_to(gateway, path) == location


@pytest.mark.parametrize(
    "query",
    [
        "@evil.example",
        "//evil.example/",
        "x=1&https://evil.example",
        "a=%0d%0aLocation:%20https://evil.example",
        "a=\\\\evil.example",
        'a="<script>"',
    ],
)
async def test_a_forwarded_query_cannot_change_the_host(
    gateway: httpx.AsyncClient, query: str
) -> None:
    code = f"s{abs(hash(query)) % 10**9}"
    await make(gateway, code, url="https://example.com/p", forward_query=True)
    # Sent as it is written (httpx would otherwise normalise it).
    url = gateway.base_url.join(f"/{code}").copy_with(query=query.encode())
    r = await gateway.send(gateway.build_request("GET", url))
    assert r.status_code == 302
    location = r.headers["location"]
    parts = urlsplit(location)
    assert (parts.scheme, parts.hostname, parts.path) == ("https", "example.com", "/p")
    assert all(33 <= ord(c) < 127 for c in location), location
    assert "\r" not in location
    assert "\n" not in location


async def test_rules_and_forwarding_together(gateway: httpx.AsyncClient) -> None:
    await make(
        gateway,
        "both",
        forward_query=True,
        rules=[rule("https://m.example.com/?from=rule", device=["mobile"])],
    )
    assert (
        await goes_to(gateway, "/both?utm=x", {"user-agent": IPHONE})
        == "https://m.example.com/?from=rule&utm=x"
    )
