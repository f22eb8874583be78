"""At most two CSV imports run at once per gateway (SPEC, "Limits"): a
third is refused with 429 and Retry-After before its body is read."""

from __future__ import annotations

import asyncio

import httpx

from tests.abuse import tuned
from tests.harness import eventually

CSV = {"content-type": "text/csv"}


async def test_a_third_import_is_refused_while_two_run(
    gateway: httpx.AsyncClient, db_url: str
) -> None:
    async with tuned.locked(db_url, "links", "SHARE"):
        # Both imports reach their INSERT and wait there on the test's lock.
        running = [
            asyncio.create_task(
                gateway.post(
                    "/api/links/import",
                    content=f"url\nhttps://example.com/{i}\n",
                    headers=CSV,
                    timeout=60,
                )
            )
            for i in range(2)
        ]

        async def both_running() -> bool:
            return await tuned.waiting_on_locks(db_url, "INSERT INTO links") == 2

        await eventually(both_running, what="two imports waiting on the lock")
        third = await gateway.post(
            "/api/links/import", content="url\nhttps://example.com/3\n", headers=CSV, timeout=5
        )
        assert third.status_code == 429, third.text
        assert third.headers["content-type"] == "application/problem+json"
        assert int(third.headers["retry-after"]) >= 1
        assert "2 imports are running" in third.json()["detail"]
    done = await asyncio.gather(*running)
    assert [r.status_code for r in done] == [200, 200], [r.text for r in done]
    assert [r.json()["imported"] for r in done] == [1, 1]
    # Their slots are free again.
    again = await gateway.post(
        "/api/links/import", content="url\nhttps://example.com/4\n", headers=CSV
    )
    assert again.status_code == 200, again.text
