"""The gateway's orphan visit counts (services/link/orphans.py): summed per
key, bounded per second, nothing lost past the bound."""

from __future__ import annotations

import secrets

from services.link.orphans import PATHS, Orphans
from shared.contracts import BASE_URL, INVALID_CODE, NOT_FOUND, ORPHAN_OTHERS, ORPHAN_PATH_CUT


def test_visits_are_summed_per_domain_kind_and_path() -> None:
    orphans = Orphans()
    for _ in range(3):
        orphans.count(None, BASE_URL, "/")
    orphans.count(None, NOT_FOUND, "/gone")
    orphans.count("go.example", NOT_FOUND, "/gone")
    orphans.count(None, INVALID_CODE, "/" + "x" * 1000)
    orphans.count(None, INVALID_CODE, "/" + "x" * 2000)  # the same once cut
    since, until, counts = orphans.take()
    assert since <= until
    assert counts == {
        (None, BASE_URL, "/"): 3,
        (None, NOT_FOUND, "/gone"): 1,
        ("go.example", NOT_FOUND, "/gone"): 1,
        (None, INVALID_CODE, "/" + "x" * (ORPHAN_PATH_CUT - 1)): 2,
    }


def test_a_window_starts_where_the_last_ended() -> None:
    orphans = Orphans()
    orphans.count(None, BASE_URL, "/")
    _, first_end, first = orphans.take()
    second_start, _, second = orphans.take()
    assert first == {(None, BASE_URL, "/"): 1}
    assert second == {}
    assert second_start == first_end


def test_past_the_bound_visits_are_summed_under_star() -> None:
    orphans = Orphans()
    flood = [f"/{secrets.token_hex(8)}" for _ in range(PATHS * 10)]
    for path in flood:
        orphans.count(None, NOT_FOUND, path)
        orphans.count(None, INVALID_CODE, path + ".x")
    # A path already held is still counted as itself.
    orphans.count(None, NOT_FOUND, flood[0])
    _, _, counts = orphans.take()
    assert len(counts) == PATHS + 2
    assert counts[(None, NOT_FOUND, flood[0])] == 2
    stars = {k: n for k, n in counts.items() if k[2] == ORPHAN_OTHERS}
    assert set(stars) == {(None, NOT_FOUND, ORPHAN_OTHERS), (None, INVALID_CODE, ORPHAN_OTHERS)}
    assert sum(counts.values()) == len(flood) * 2 + 1
    # The next second has its own bound.
    orphans.count(None, NOT_FOUND, "/fresh")
    assert orphans.take()[2] == {(None, NOT_FOUND, "/fresh"): 1}
