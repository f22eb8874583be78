"""Visit limits in the gateway (SPEC: ``max_visits``), with no I/O per redirect.

Two lower bounds of a link's human visits are kept, and the larger decides:

- the count analytics puts into KV ``link_visits``
  (every gateway's clicks, counted once, a moment late), held here by a watch;
- this gateway's own: the count it last saw plus the human redirects it has
  let through since, each taken before its click is published.

So one gateway alone never lets more than ``max_visits`` through, and with
several the overshoot is what the others redirect while their clicks travel
to the counter and its count back to KV (tens of milliseconds; the SPEC
bounds it at one second of traffic). A PATCH that raises or removes the
limit reopens the link: the count is compared with the entry held now.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

import msgspec
from nats.js.kv import KeyValue

from shared.contracts import INVALID, LinkEntry, VisitCount
from shared.jetstream.kvwatch import Followed

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(VisitCount).decode
# Limited links whose own count a gateway keeps; past this it starts again
# from the counts in KV (which only loosens the bound for a moment).
TRACKED: Final = 100_000


class Limits(Followed):
    def __init__(self, kv: KeyValue) -> None:
        self._counted: dict[str, VisitCount] = {}
        # code -> (generation, visits this gateway knows of: counted or let through)
        self._own: dict[str, tuple[datetime | None, int]] = {}
        super().__init__(kv, "kv-watch-visits")

    def admit(self, code: str, entry: LinkEntry, limit: int, human: bool) -> bool:
        """Whether the link still has visits. A human's visit is counted as
        taken at once (give it back with :meth:`give_back` if the redirect
        fails); a bot's takes none, but a link out of visits is gone for it too."""
        visits = self._known(code, entry)
        if visits >= limit:
            return False
        if not human:
            return True
        if len(self._own) >= TRACKED:
            self._own.clear()
        self._own[code] = (entry.created_at, visits + 1)
        return True

    def give_back(self, code: str, entry: LinkEntry) -> None:
        generation, visits = self._own.get(code, (None, 0))
        if generation == entry.created_at and visits > 0:
            self._own[code] = (generation, visits - 1)

    def _known(self, code: str, entry: LinkEntry) -> int:
        counted = self._counted.get(code)
        # A count of another generation (the code was deleted and taken
        # again) is not this link's; an entry from before generations were
        # carried (created_at None) takes whatever is counted.
        visits = (
            counted.visits
            if counted is not None
            and (entry.created_at is None or counted.since == entry.created_at)
            else 0
        )
        own = self._own.get(code)
        if own is not None and own[0] == entry.created_at:
            visits = max(visits, own[1])
        return visits

    def _put(self, code: str, value: bytes) -> None:
        try:
            count = _decode(value)
        except INVALID as exc:
            log.error("KV link_visits %s is not a visit count (%s); ignored", code, exc)
            return
        held = self._counted.get(code)
        # Counters put concurrently: within a generation a count never goes back.
        if (
            held is None
            or count.since > held.since
            or (count.since == held.since and count.visits > held.visits)
        ):
            self._counted[code] = count

    def _delete(self, code: str) -> None:
        self._counted.pop(code, None)
