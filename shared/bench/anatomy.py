"""Where a click's cost goes, between two readings of the whole system
(``linkflow bench --system``): each process's CPU, wakeups and run-queue
wait; each worker's batches; PostgreSQL's transactions and rows. The same
table for a spike's catch-up and for every steady step, so that the two can
be compared line by line.

Wakeups are voluntary context switches (a thread slept and was woken);
run-queue wait is the time a runnable thread waited for a CPU
(``/proc/<pid>/task/<tid>/schedstat``, second field), the price of sharing
two cores that a redirect pays in its latency.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.bench.client import Client
from shared.bench.wrk import tree_cpu_seconds
from shared.priority import children

# The click consumers whose batches are read from their service's /metrics.
_BATCH = re.compile(r'^linkflow_worker_batch_size_(count|sum)\{consumer="([^"]+)"\} (\S+)$', re.M)
_GROUPS = re.compile(r"^linkflow_click_groups_total (\S+)$", re.M)


# A child that echoes each byte it reads: the other end of a round trip.
_ECHO = "import os\nwhile (b := os.read(0, 1)) and b != b'q':\n    os.write(1, b)\n"


def wake_cost(trips: int = 2000, gap: float = 0.002) -> tuple[float, float]:
    """This machine's price of sleeping: the CPU (µs, this process's) of one
    round trip through a pipe to another process, back to back and with
    ``gap`` seconds of sleep between trips (so the CPUs go idle and must be
    woken). A steady rate pays the second on every wakeup; a spike, whose
    processes never sleep, the first."""
    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert child.stdin is not None
    assert child.stdout is not None
    out, back = child.stdin.fileno(), child.stdout.fileno()
    costs = []
    try:
        for pause in (0.0, gap):
            started = time.process_time()
            for _ in range(trips):
                os.write(out, b"x")
                os.read(back, 1)
                if pause:
                    time.sleep(pause)  # wait-ok: the sleep is what is measured
            costs.append((time.process_time() - started) / trips * 1e6)
    finally:
        os.write(out, b"q")
        child.wait(10)
    return costs[0], costs[1]


def _tids(pid: int) -> list[Path]:
    """The threads of ``pid`` and of its children."""
    tasks: list[Path] = []
    for p in [pid, *children(pid)]:
        try:
            tasks.extend(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
    return tasks


def _sched(pid: int) -> tuple[int, int]:
    """(voluntary context switches, run-queue wait in ns) of the tree, now.
    Threads and backends that ended between two readings are not counted:
    the figures are lower bounds."""
    switches = waited = 0
    for task in _tids(pid):
        try:
            status = (task / "status").read_text()
            stat = (task / "schedstat").read_text().split()
        except OSError:
            continue
        found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        switches += int(found.group(1)) if found else 0
        waited += int(stat[1])
    return switches, waited


async def _database(url: str) -> tuple[int, int]:
    """(transactions committed, rows written) over every database, now."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT sum(xact_commit)::bigint AS x,"
            " sum(tup_inserted + tup_updated + tup_deleted)::bigint AS w"
            " FROM pg_stat_database"
        )
        assert row is not None
        return int(row["x"]), int(row["w"])
    finally:
        await conn.close()


@dataclass(frozen=True)
class Reading:
    cpu: dict[str, float | None]
    sched: dict[str, tuple[int, int]]
    batches: dict[str, tuple[float, float]]  # consumer -> (batches, messages)
    groups: float  # the gateway's PubAck groups
    database: tuple[int, int]


def read(pids: dict[str, int], metrics: list[str], database_url: str) -> Reading:
    """Everything at once: ``pids`` by name, the ``/metrics`` URLs of the
    gateway and the workers, PostgreSQL's owner URL (pg_stat_database)."""
    batches: dict[str, list[float]] = {}
    groups = 0.0
    with Client() as http:
        for url in metrics:
            text = http.get(url).text
            groups += sum(float(n) for n in _GROUPS.findall(text))
            for kind, consumer, value in _BATCH.findall(text):
                pair = batches.setdefault(consumer, [0.0, 0.0])
                pair[0 if kind == "count" else 1] += float(value)
    return Reading(
        cpu={name: tree_cpu_seconds(pid) for name, pid in pids.items()},
        sched={name: _sched(pid) for name, pid in pids.items()},
        batches={k: (v[0], v[1]) for k, v in batches.items()},
        groups=groups,
        database=asyncio.run(_database(database_url)),
    )


def table(before: Reading, after: Reading, clicks: int, seconds: float) -> list[str]:
    """The lines of the table: per process, per worker, PostgreSQL."""
    if clicks <= 0 or seconds <= 0:
        return ["  (no clicks: nothing to divide by)"]
    lines = ["    process          CPU/click  wakeups/s  wakeups/click  run-queue wait"]
    for name, start in before.cpu.items():
        end = after.cpu[name]
        if start is None or end is None:
            continue
        woke = after.sched[name][0] - before.sched[name][0]
        waited = (after.sched[name][1] - before.sched[name][1]) / 1e6
        lines.append(
            f"    {name:<15} {(end - start) / clicks * 1e6:7.0f} µs {woke / seconds:9.0f}"
            f"  {woke / clicks:13.3f}  {waited / seconds:7.1f} ms/s"
        )
    for consumer, (count, size) in sorted(after.batches.items()):
        c0, s0 = before.batches.get(consumer, (0.0, 0.0))
        fetched, handled = count - c0, size - s0
        mean = handled / fetched if fetched else 0.0
        lines.append(
            f"    worker {consumer:<16} {fetched / seconds:6.1f} batches/s, "
            f"{mean:6.1f} clicks a batch, {fetched / clicks:.4f} batches/click"
        )
    groups = after.groups - before.groups
    lines.append(
        f"    gateway          {clicks / groups if groups else 0:.2f} clicks a PubAck group, "
        f"{groups / seconds:.0f} groups/s"
    )
    commits = after.database[0] - before.database[0]
    written = after.database[1] - before.database[1]
    lines.append(
        f"    postgresql       {commits / clicks:.4f} transactions/click, "
        f"{written / clicks:.2f} rows written/click"
    )
    return lines
