"""Choosing a redirect's target from a link's rules, without a server:
each condition, every condition of a rule at once, the first match winning,
the language a visitor prefers, the country from the CDN or GeoIP, and the
memo of decisions. (tests/integration/test_rules.py follows a few of these
through the gateway, to the Location and the click's ``rule``.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from services.link.rules import LinkRules, choose, compile_rules, preferred_language
from services.link.validation import LinkFields
from shared.contracts import Rule
from shared.geo import Countries
from tests.agents import IPAD, IPHONE, LINUX, MAC, PIXEL, WINDOWS


class Atlas(Countries):
    """GeoIP without its data file: a few networks, by anonymized address."""

    NETWORKS: ClassVar[dict[str, str]] = {"198.51.100.0": "NZ", "2001:db8::": "JP"}

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str | None] = []

    def country(self, ip: str | None) -> str | None:
        self.asked.append(ip)
        return self.NETWORKS.get(ip or "")


def rules(*given: tuple[dict[str, Any], str]) -> list[Rule]:
    """Rules as a caller writes them, through the same checks."""
    body = {"url": "https://default.example/", "rules": [{"when": w, "url": u} for w, u in given]}
    return LinkFields("https://sho.rt").create(body).rules


def visit(
    ruled: list[Rule],
    *,
    ua: str | None = WINDOWS,
    language: str | None = None,
    country: str | None = None,
    ip: str | None = "192.0.2.7",
    query: bytes = b"",
    countries: Countries | None = None,
) -> int | None:
    return choose(
        compile_rules(ruled),
        user_agent=ua,
        accept_language=language,
        country=country,
        ip=ip,
        query=query,
        countries=countries or Atlas(),
    )


@pytest.mark.parametrize(
    ("when", "facts", "matches"),
    [
        ({"device": ["mobile"]}, {"ua": IPHONE}, True),
        ({"device": ["mobile"]}, {"ua": PIXEL}, True),
        ({"device": ["mobile"]}, {"ua": IPAD}, False),
        ({"device": ["tablet"]}, {"ua": IPAD}, True),
        ({"device": ["desktop"]}, {"ua": MAC}, True),
        ({"device": ["desktop"]}, {"ua": None}, True),  # no user agent: a desktop
        ({"device": ["desktop", "tablet"]}, {"ua": IPHONE}, False),
        ({"os": ["ios"]}, {"ua": IPAD}, True),
        ({"os": ["ios"]}, {"ua": IPHONE}, True),
        ({"os": ["android"]}, {"ua": PIXEL}, True),
        ({"os": ["windows"]}, {"ua": WINDOWS}, True),
        ({"os": ["macos"]}, {"ua": MAC}, True),
        ({"os": ["linux"]}, {"ua": LINUX}, True),
        ({"os": ["linux"]}, {"ua": MAC}, False),
        ({"os": ["linux", "windows"]}, {"ua": None}, False),
        ({"language": ["de"]}, {"language": "de-CH, de;q=0.9, en;q=0.8"}, True),
        # The highest quality wins, not the first listed.
        ({"language": ["de"]}, {"language": "en;q=0.5, de;q=0.9"}, True),
        ({"language": ["de"]}, {"language": "en, de;q=0.9"}, False),
        ({"language": ["de"]}, {"language": "de;q=0, en;q=0.1"}, False),
        ({"language": ["de"]}, {"language": None}, False),
        ({"language": ["DE"]}, {"language": "De-at"}, True),  # folded both sides
        ({"country": ["DE", "AT"]}, {"country": "AT"}, True),
        ({"country": ["DE"]}, {"country": "FR"}, False),
        ({"country": ["DE"]}, {}, False),  # an address of no country
        # Without the CDN's header, GeoIP for the visitor's network.
        ({"country": ["NZ"]}, {"ip": "198.51.100.77"}, True),
        ({"country": ["JP"]}, {"ip": "2001:db8::1234:5678"}, True),
        # The CDN's header, when there is one, over GeoIP.
        ({"country": ["NZ"]}, {"ip": "198.51.100.77", "country": "DE"}, False),
        ({"query": {"src": "news"}}, {"query": b"src=news&x=1"}, True),
        ({"query": {"src": "news"}}, {"query": b"src=mail&src=news"}, True),
        ({"query": {"src": "news"}}, {"query": b"src=newsletter"}, False),
        ({"query": {"src": "news"}}, {"query": b""}, False),
        ({"query": {"src": "a b"}}, {"query": b"src=a+b"}, True),  # decoded as a form
        ({"query": {"src": "news", "x": "1"}}, {"query": b"src=news"}, False),
        ({"query": {"flag": "x"}}, {"query": b"flag"}, False),
        ({"query": {"q": "caf\u00e9"}}, {"query": b"q=caf%C3%A9"}, True),  # escapes: UTF-8
        ({"after": "2020-01-01T00:00:00Z"}, {}, True),
        ({"after": "2999-01-01T00:00:00Z"}, {}, False),
        ({"before": "2999-01-01T00:00:00Z"}, {}, True),
        ({"before": "2020-01-01T00:00:00Z"}, {}, False),
        ({"after": "2020-01-01T00:00:00Z", "before": "2999-01-01T00:00:00Z"}, {}, True),
        # Every condition must hold.
        ({"device": ["mobile"], "language": ["fr"]}, {"ua": IPHONE}, False),
        ({"device": ["mobile"], "language": ["fr"]}, {"ua": IPHONE, "language": "fr-FR"}, True),
        ({"os": ["ios"], "query": {"a": "1"}, "country": ["DE"]}, {"ua": IPAD}, False),
    ],
)
def test_each_condition(when: dict[str, Any], facts: dict[str, Any], matches: bool) -> None:
    assert visit(rules((when, "https://r.example/")), **facts) == (0 if matches else None)


def test_the_first_matching_rule_wins() -> None:
    ruled = rules(
        ({"os": ["ios"]}, "https://ios.example/"),
        ({"device": ["mobile"]}, "https://mobile.example/"),
        ({"device": ["tablet"]}, "https://tablet.example/"),
        ({"after": "2020-01-01T00:00:00Z"}, "https://any.example/"),
    )
    assert visit(ruled, ua=IPHONE) == 0  # mobile too, but ios comes first
    assert visit(ruled, ua=IPAD) == 0
    assert visit(ruled, ua=PIXEL) == 1
    assert visit(ruled, ua=WINDOWS) == 3
    assert visit(ruled[:3], ua=WINDOWS) is None


def test_a_fact_no_rule_asks_about_is_never_worked_out() -> None:
    atlas = Atlas()
    ruled = rules(({"os": ["ios"]}, "https://a.example/"), ({"country": ["NZ"]}, "https://b/"))
    assert visit(ruled, ua=IPHONE, ip="198.51.100.77", countries=atlas) == 0
    assert atlas.asked == []  # the first rule held: GeoIP never asked
    assert visit(ruled, ua=WINDOWS, ip="198.51.100.77", countries=atlas) == 1
    # Asked once, about the visitor's network, never the full address.
    assert atlas.asked == ["198.51.100.0"]


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, None),
        ("", None),
        ("de", "de"),
        ("de-CH", "de"),
        ("DE-ch", "de"),
        ("en;q=0.5, de;q=0.9", "de"),
        ("en, de", "en"),  # the first of equals
        ("*", None),
        ("*, fr;q=0.1", "fr"),
        ("de;q=0", None),
        ("de;q=abc, fr;q=0.2", "fr"),  # a bad quality counts as 0
        (" , ;q=1, it ; q=0.3", "it"),
    ],
)
def test_the_preferred_language(header: str | None, language: str | None) -> None:
    assert preferred_language(header) == language


def test_a_link_remembers_decisions_by_the_facts_its_rules_test() -> None:
    ruled = LinkRules(rules(({"os": ["ios"]}, "https://ios.example/")))
    atlas = Atlas()
    assert ruled.choose(IPHONE, "de", None, "192.0.2.1", b"x=1", atlas) == 0
    assert ruled.url(0) == "https://ios.example/"
    # Language and query are not the rules' business: one kind of visitor.
    assert ruled.choose(IPHONE, "fr", "DE", "192.0.2.2", b"x=2", atlas) == 0
    assert len(ruled._memo) == 1
    assert ruled.choose(WINDOWS, "fr", None, None, b"", atlas) is None
    assert len(ruled._memo) == 2


def test_a_remembered_decision_ends_when_a_rule_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    ruled = LinkRules(rules(({"after": start.isoformat()}, "https://new.example/")))
    clock = [start.timestamp() - 1]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    assert ruled.choose(WINDOWS, None, None, None, b"", Atlas()) is None
    clock[0] = start.timestamp()
    assert ruled.choose(WINDOWS, None, None, None, b"", Atlas()) == 0
