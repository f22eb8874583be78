"""Re-classifying the past: after the bot list changes, a backfill with
``reclassify: true`` derives yesterday's bot flags again from the clicks in
``CLICKS`` and replaces that range's counts, idempotently."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from shared import useragent
from shared.jetstream import topology
from tests.harness import eventually
from tests.integration.test_analytics import CHROME, human, publish
from tests.integration.test_api import assert_problem

CRAWLER = "NewCrawler/1.0 (+https://crawler.example/about)"


@pytest.fixture
def new_bot_list() -> Iterator[None]:
    yield
    useragent.add_bot_tokens("")  # back to the built-in list for later tests


async def stats(analytics: httpx.AsyncClient, start: datetime, end: datetime, bots: bool) -> Any:
    r = await analytics.get(
        "/api/stats/links/past",
        params={
            "from": start.isoformat(),
            "to": end.isoformat(),
            "include_bots": str(bots).lower(),
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


async def reclassify(analytics: httpx.AsyncClient, start: datetime, end: datetime) -> None:
    r = await analytics.post(
        "/api/backfills",
        json={"from": start.isoformat(), "to": end.isoformat(), "reclassify": True},
    )
    assert r.status_code == 202, r.text
    backfill = r.json()["id"]

    async def done() -> bool:
        state = (await analytics.get(f"/api/backfills/{backfill}")).json()["state"]
        assert state not in ("failed", "cancelled"), state
        return bool(state == "done")

    await eventually(done, 30, "the re-classifying backfill")


async def test_yesterdays_bots_after_the_list_changes(
    analytics: httpx.AsyncClient, nc: Client, new_bot_list: None
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    noon = yesterday + timedelta(hours=12)
    past = [human("past", user_agent=CRAWLER, ts=noon) for _ in range(3)]
    past += [human("past", user_agent=CHROME, ts=noon) for _ in range(2)]
    now = [human("past", user_agent=CRAWLER)]  # today: outside the range
    await publish(nc, past + now)

    async def counted() -> bool:
        body = await stats(analytics, yesterday, datetime.now(UTC) + timedelta(hours=1), True)
        return bool(body["total"] == 6)

    await eventually(counted, what="six clicks counted")
    before = await stats(analytics, yesterday, today, False)
    assert before["total"] == 5  # the crawler was not on the list yesterday

    useragent.add_bot_tokens("newcrawler")
    for _ in range(2):  # and again: the same counts
        await reclassify(analytics, yesterday + timedelta(hours=3), today - timedelta(minutes=30))
        humans = await stats(analytics, yesterday, today, False)
        everyone = await stats(analytics, yesterday, today, True)
        assert humans["total"] == 2
        assert everyone["total"] == 5
        assert {"device": "bot", "count": 3} in everyone["devices"]
        assert {"browser": "Chrome", "count": 2} in humans["browsers"]
    # Today's click is outside the range: still counted as it was.
    later = await stats(analytics, today, datetime.now(UTC) + timedelta(hours=1), False)
    assert later["total"] == 1


async def test_a_range_the_stream_no_longer_holds_is_refused(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    await publish(nc, [human("gone"), human("gone"), human("gone")])
    js = nc.jetstream()

    async def stored() -> bool:
        return (await js.stream_info(topology.CLICKS)).state.messages >= 3

    await eventually(stored, what="three clicks stored")

    async def counted() -> bool:
        r = await analytics.get("/api/stats/links/gone")
        return bool(r.json()["total"] == 3)

    await eventually(counted, what="three clicks counted")
    last = (await js.stream_info(topology.CLICKS)).state.last_seq
    await js.purge_stream(topology.CLICKS, seq=last)  # as the stream's max_age would
    start = datetime.now(UTC) - timedelta(days=2)
    r = await analytics.post(
        "/api/backfills",
        json={"from": start.isoformat(), "to": datetime.now(UTC).isoformat(), "reclassify": True},
    )
    body = assert_problem(r, 422, "from")
    assert "CLICKS holds clicks from" in str(body["errors"])
    # Nothing was deleted: the counts stand.
    r = await analytics.get("/api/stats/links/gone", params={"from": start.isoformat()})
    assert r.json()["total"] == 3


async def test_reclassify_must_be_a_boolean(analytics: httpx.AsyncClient) -> None:
    r = await analytics.post(
        "/api/backfills",
        json={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "reclassify": "yes"},
    )
    assert_problem(r, 422, "reclassify")
