"""A flood of random paths is counted as orphan visits at a bounded cost:
no I/O per request, at most about 1,000 ``visits.orphan`` messages a
second, and a gateway that does not grow."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.link.orphans import PATHS
from shared.contracts import ORPHAN_VISITS, OrphanVisits
from tests.abuse.test_gateway import hostile, make, outcome, rss
from tests.harness import eventually

FLOOD = 10_000
# An unknown code's 404 waits up to a quarter second for the code to arrive
# by the watch (services/link/cache.py): many at once, as a scan sends them.
CONNS = 250
# Subjects a request for an unknown code would reach if it did I/O: a KV
# get (a database query only ever follows one), a click.
IO_SUBJECTS = ("$JS.API.DIRECT.GET.KV_links.", "$JS.API.STREAM.MSG.GET.KV_links", "clicks.")


async def test_a_flood_of_random_paths_is_counted_without_io(
    gateway: httpx.AsyncClient, nc: Client
) -> None:
    await make(gateway, "known")
    visits: list[OrphanVisits] = []
    subjects: Counter[str] = Counter()

    async def keep(msg: Msg) -> None:
        visits.append(msgspec.json.decode(msg.data, type=OrphanVisits))

    async def everything(msg: Msg) -> None:
        subjects[msg.subject] += 1

    subs = [await nc.subscribe(ORPHAN_VISITS, cb=keep), await nc.subscribe(">", cb=everything)]
    await nc.flush()
    # Warm: the first requests load what any request would.
    tag = secrets.token_hex(4)
    warm = await outcome(await hostile(gateway, f"/warm{tag}{{i}}", 500, "x-tag", 8, CONNS))
    assert warm == {"404": 500}
    before = rss()
    started = asyncio.get_running_loop().time()
    # Half codes no link has (not_found), half paths no code can be (invalid_code).
    floods = await asyncio.gather(
        outcome(await hostile(gateway, f"/scan{tag}{{i}}", FLOOD // 2, "x-tag", 8, CONNS)),
        outcome(await hostile(gateway, f"/scan.{tag}.{{i}}", FLOOD // 2, "x-tag", 8, 16)),
    )
    took = asyncio.get_running_loop().time() - started
    assert floods == [{"404": FLOOD // 2}] * 2
    assert (await gateway.get("/known")).status_code == 302

    def counted() -> Counter[str]:
        kinds: Counter[str] = Counter()
        for v in visits:
            if tag in v.path or v.path == "*":
                kinds[v.kind] += v.count
        return kinds

    async def all_sent() -> bool:
        return sum(counted().values()) == FLOOD + 500

    await eventually(all_sent, 10, f"{FLOOD + 500} orphan visits sent (so far {counted()})")
    grown = rss() - before
    await nc.flush()
    for sub in subs:
        await sub.unsubscribe()
    assert counted() == {"not_found": FLOOD // 2 + 500, "invalid_code": FLOOD // 2}
    # At most PATHS keys a second, plus one `*` sum per kind that overflowed.
    per_second = Counter(v.from_ for v in visits)
    assert max(per_second.values()) <= PATHS + 2, per_second
    # No KV get and no click for any of them; the other traffic (the
    # gateway's own loops) is nothing like one message per request.
    io = {s: n for s, n in subjects.items() if s.startswith(IO_SUBJECTS)}
    assert io == {"clicks.known": 1}, io
    other = sum(n for s, n in subjects.items() if s != ORPHAN_VISITS and s not in io)
    assert other < FLOOD // 20, subjects.most_common(10)
    assert grown < 30 * 1024 * 1024, f"grew {grown / 2**20:.1f} MB over {took:.1f} s"
