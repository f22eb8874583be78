from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from services.link.clicks import anonymize, click_id, is_bot, new_click


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("not an ip", None),
        (None, None),
    ],
)
def test_anonymize(ip: str | None, expected: str | None) -> None:
    assert anonymize(ip) == expected


@pytest.mark.parametrize(
    ("ua", "bot"),
    [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0", False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", False),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", True),
        ("facebookexternalhit/1.1", True),
        ("Slackbot-LinkExpanding 1.0", True),
        ("WhatsApp/2.23.20.0", True),
        ("curl/8.5.0", True),
        (None, False),
    ],
)
def test_is_bot(ua: str | None, bot: bool) -> None:
    assert is_bot(ua, head=False) is bot


def test_head_is_always_a_bot() -> None:
    assert is_bot("Mozilla/5.0", head=True)


def test_click_ids_are_unique_and_ordered() -> None:
    ids = [click_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    prefixes = [i[:16] for i in ids]  # the time part; the rest is random
    assert prefixes == sorted(prefixes)


def test_anonymize_can_be_turned_off() -> None:
    c = new_click(
        "abc",
        referrer=None,
        user_agent=None,
        ip="203.0.113.77",
        country=None,
        head=False,
        request_id=None,
        anonymize_ip=False,
    )
    assert c.ip == "203.0.113.77"
    assert c.request_id == c.id


def test_click_time_is_the_wire_format_of_now() -> None:
    before = datetime.now(UTC)
    ts = new_click(
        "abc",
        referrer=None,
        user_agent=None,
        ip=None,
        country=None,
        head=False,
        request_id=None,
        anonymize_ip=True,
    ).ts
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
    stamped = datetime.fromisoformat(ts)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamped <= after
