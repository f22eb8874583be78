"""A/B splits: the draw over visitor ids as the gateway makes them."""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from unittest.mock import sentinel

from services.link.clicks import new_click
from services.link.splits import draw
from services.link.visitors import Visitors
from shared.contracts import Destination

ONE_TO_THREE = [
    Destination(url="https://a.example/", weight=1),
    Destination(url="https://b.example/", weight=3),
]


def _visitors() -> Visitors:
    """The gateway's visitor ids, keyed with a day's salt (as from KV)."""
    visitors = Visitors(sentinel.kv)  # type: ignore[arg-type]
    visitors._salts = {  # the salt Visitors.prepare would fetch
        day: hashlib.blake2b(key=secrets.token_bytes(32), digest_size=16)
        for day in ("2026-12-01", "2026-12-02", "2026-12-03")
    }
    return visitors


def _landed(ip: str, visitors: Visitors) -> int | None:
    click = new_click(
        "split",
        referrer=None,
        user_agent="Mozilla/5.0",
        ip=ip,
        country=None,
        head=False,
        request_id=None,
        anonymize_ip=True,
        visitors=visitors,
        destinations=ONE_TO_THREE,
    )
    assert click.visitor is not None
    return click.destination


def test_ten_thousand_visitors_split_one_to_three_within_two_points() -> None:
    visitors = _visitors()
    landed = Counter(
        _landed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", visitors) for i in range(10_000)
    )
    assert set(landed) == {0, 1}
    share = landed[0] / 10_000
    assert abs(share - 0.25) <= 0.02, landed


def test_one_visitor_lands_on_one_destination_every_time() -> None:
    visitors = _visitors()
    assert len({_landed("203.0.113.7", visitors) for _ in range(100)}) == 1


def test_without_a_visitor_id_the_draw_is_random_by_weight() -> None:
    drawn = Counter(draw(ONE_TO_THREE, None) for _ in range(10_000))
    assert abs(drawn[0] / 10_000 - 0.25) <= 0.02, drawn
    # Every unit of weight is reachable: 1 of 1,000 gets the bottom of the range.
    rare = [
        Destination(url="https://a.example/", weight=1),
        Destination(url="https://b.example/", weight=999),
    ]
    assert draw(rare, "0" * 32) == 0
    assert draw(rare, "00000001" + "0" * 24) == 1
    assert draw(rare, "f" * 32) == 1
