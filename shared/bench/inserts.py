"""``linkflow bench --inserts``: does ``clicks`` stay as fast to write into
once it holds years of clicks?

One PostgreSQL as ``linkflow up`` runs it (durable, default settings), two
databases: one whose ``clicks`` is empty, one filled with ``rows`` generated
clicks over the last twelve months (``generate_series``, not the pipeline).
Then the recorder's own INSERT, in its batches, into each, alternated
``rounds`` times; the empty table is emptied again before each of its
rounds. The fill takes minutes for 50 million rows: ``--data DIR`` keeps the
cluster so that a second run reuses it.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import statistics
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import asyncpg

from shared.cli.servers import PostgresServer


def _entry(name: str) -> Any:
    (entry,) = entry_points(group="linkflow.bench", name=name)
    return entry.load()


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


async def _before_round(url: str, *, empty: bool) -> None:
    """The empty table emptied again; either starts without the last round's
    dirty pages to write."""
    conn = await asyncpg.connect(url)
    try:
        if empty:
            await conn.execute("TRUNCATE clicks")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def run_inserts(rows: int, clicks: int, rounds: int, data: Path | None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    fill, insert_rate = _entry("click_fill"), _entry("click_insert_rate")
    home = data or Path(tempfile.mkdtemp(prefix="linkflow-insert-bench-"))
    pg = PostgresServer(home / "pg")
    try:
        pg.start()
        empty, full = pg.url("clicks_empty"), pg.url("clicks_full")
        asyncio.run(fill(empty, 0))
        started = time.monotonic()
        held = asyncio.run(fill(full, rows))
        print(
            f"bench --inserts: {held:,} clicks in the full table "
            f"({time.monotonic() - started:.0f} s to fill or find), "
            f"batches of 500 through the recorder's INSERT, {clicks:,} per round",
            flush=True,
        )
        ratios = []
        for i in range(rounds):
            asyncio.run(_before_round(empty, empty=True))
            on_empty = asyncio.run(insert_rate(empty, clicks))
            asyncio.run(_before_round(full, empty=False))
            on_full = asyncio.run(insert_rate(full, clicks))
            ratios.append(on_full / on_empty)
            print(
                f"  round {i + 1}: empty {on_empty:8,.0f} clicks/s, "
                f"full {on_full:8,.0f} clicks/s, ratio {on_full / on_empty:.2f}",
                flush=True,
            )
        median = statistics.median(ratios)
        verdict = "met" if median >= 0.8 else "MISSED"
        print(
            f"bench --inserts: ratio full/empty median {median:.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}); target >= 0.80: {verdict}",
            flush=True,
        )
        return 0
    finally:
        pg.stop()
        if data is None:
            shutil.rmtree(home, ignore_errors=True)
