"""A/B splits (SPEC: destinations): which destination a visit is sent to."""

from __future__ import annotations

import random
from collections.abc import Sequence

from shared.contracts import Destination


def draw(destinations: Sequence[Destination], visitor: str | None) -> int:
    """The index of the destination drawn by weight: from the visitor id
    when there is one (a hash, so its first 32 bits are uniform, and the same
    visitor gets the same destination all day, with no cookie), at random
    otherwise."""
    total = sum(d.weight for d in destinations)
    point = int(visitor[:8], 16) % total if visitor else random.randrange(total)
    for i, d in enumerate(destinations):
        point -= d.weight
        if point < 0:
            return i
    return len(destinations) - 1  # unreachable: the weights sum to total
