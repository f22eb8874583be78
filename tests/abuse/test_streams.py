"""Live click streams are capped per key and per analytics process (SPEC,
"Limits"): past a cap, a 429 problem+json with Retry-After, and the others
stay open."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from nats.aio.client import Client

from shared.http import keys
from tests.abuse import tuned
from tests.harness import bearer, eventually
from tests.servers import Servers

PATH = "/api/stream/clicks"


async def opened(
    stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, key: str
) -> httpx.Response:
    """A stream's answer; if it is one, held open (its first event read)
    until ``stack`` closes."""
    r = await stack.enter_async_context(client.stream("GET", PATH, headers=bearer(key)))
    if r.status_code == 200:
        # Held, not dropped: a dropped iterator, finalized, closes the stream.
        lines = r.aiter_lines()
        stack.push_async_callback(lines.aclose)
        assert await anext(lines) == ": connected"
    else:
        await r.aread()
    return r


def too_many(r: httpx.Response, why: str) -> None:
    assert r.status_code == 429, r.status_code  # a stream's body is not read
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert why in r.json()["detail"]


@contextlib.asynccontextmanager
async def streams(
    client: httpx.AsyncClient, key: str, n: int
) -> AsyncIterator[contextlib.AsyncExitStack]:
    """``n`` streams of ``key`` open while the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            assert (await opened(stack, client, key)).status_code == 200
        yield stack


async def test_the_eleventh_stream_of_a_key_is_refused(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    js = nc.jetstream()
    watcher = await keys.create(js, "watcher", (keys.STATS_READ,))
    other = await keys.create(js, "other", (keys.STATS_READ,))
    async with streams(analytics, watcher, 10) as stack:
        too_many(await opened(stack, analytics, watcher), "this key has 10 live streams open")
        # Another key is not this one's cap.
        assert (await opened(stack, analytics, other)).status_code == 200
    # Closed streams give their slots back (once the server sees them gone).

    async def ten_again() -> bool:
        async with contextlib.AsyncExitStack() as probe:
            for _ in range(10):
                if (await opened(probe, analytics, watcher)).status_code != 200:
                    return False
            return True

    await eventually(ten_again, what="the key's slots given back")


async def test_the_process_cap_holds_across_keys(
    servers: Servers, db_url: str, admin_key: str, nc: Client
) -> None:
    js = nc.jetstream()
    names = [await keys.create(js, f"k{i}", (keys.STATS_READ,)) for i in range(4)]
    async with (
        tuned.analytics(servers, db_url, admin_key, streams=3) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        for key in names[:3]:
            assert (await opened(stack, client, key)).status_code == 200
        too_many(await opened(stack, client, names[3]), "3 live streams are open")
