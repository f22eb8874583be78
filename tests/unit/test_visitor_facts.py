"""What the gateway reads off a request for its rules: the user agent
(ua-parser), the preferred language, the country from the bundled GeoIP data."""

from __future__ import annotations

import pytest

from services.link.rules import preferred_language, visitor_country
from shared.geo import Countries
from shared.useragent import Agent, agent
from tests.agents import IPAD, IPHONE, LINUX, MAC, PIXEL, WINDOWS


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (IPHONE, Agent("mobile", "ios", "Mobile Safari")),
        (IPAD, Agent("tablet", "ios", "Mobile Safari")),
        (PIXEL, Agent("mobile", "android", "Chrome Mobile")),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0 Safari/537.36",
            Agent("tablet", "android", "Chrome"),
        ),
        (WINDOWS, Agent("desktop", "windows", "Chrome")),
        (MAC, Agent("desktop", "macos", "Safari")),
        (LINUX, Agent("desktop", "linux", "Firefox")),
        (None, Agent("desktop", "other", "Other")),
    ],
)
def test_user_agents(ua: str | None, expected: Agent) -> None:
    assert agent(ua) == expected


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-CH, de;q=0.9, en;q=0.8", "de"),
        ("en;q=0.5, FR-ca;q=0.9", "fr"),
        ("en, de", "en"),
        ("*, it;q=0.5", "it"),
        ("de;q=0", None),
        ("de;q=abc, es;q=0.1", "es"),
        ("", None),
        (None, None),
    ],
)
def test_preferred_language(header: str | None, language: str | None) -> None:
    assert preferred_language(header) == language


def test_country_from_the_header_first_else_geoip() -> None:
    countries = Countries().load()
    assert countries.country("81.2.69.160") == "GB"
    assert countries.country("2a00:1450:4001::1") == "DE"
    assert countries.country("10.1.2.3") is None
    assert countries.country("not an ip") is None
    # The anonymized address (last octet zero) still has its country.
    assert countries.country("81.2.69.0") == "GB"
    assert visitor_country("AT", "81.2.69.160", countries) == "AT"
    assert visitor_country(None, "81.2.69.160", countries) == "GB"
    assert visitor_country(None, "81.2.69.160", Countries()) is None
