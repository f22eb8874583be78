"""The load generator of ``linkflow bench``: wrk, which must be on PATH (the
bench never installs anything), and the CPU the servers under its load spend
per request."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.errors import CommandError

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    # wrk's own CPU (user + system) over the run: the load generator shares
    # the machine with what it measures, and a paced load costs it more per
    # request than a flat-out one (a timer per request).
    wrk_cpu_seconds: float
    requests: int

    @property
    def wrk_us_per_request(self) -> float:
        return self.wrk_cpu_seconds / self.requests * 1e6 if self.requests else 0.0


# One line, printed as ``linkflow bench: ...`` with exit status 1.
WRK_MISSING = (
    "wrk not found on PATH: install it (Debian/Ubuntu: apt-get install wrk; "
    "macOS: brew install wrk) and run the bench again"
)


def wrk_path() -> str:
    """Where wrk is; a CommandError saying how to get it where it is not."""
    found = shutil.which("wrk")
    if not found:
        raise CommandError(WRK_MISSING)
    return found


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


# The rate-limited load: one schedule for every connection of the thread,
# a request every 1/rate s, each connection waiting for the next free slot
# (wrk's LuaJIT reads the monotonic clock through its ffi). Unlike a fixed
# per-connection delay, the rate does not move with the response time: a
# server that keeps up gets exactly ``rate``, one that cannot gets less.
_PACER = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lf_timespec;
int clock_gettime(int clk_id, lf_timespec *tp);
]]
local ts = ffi.new("lf_timespec")
local function now_ms()
  -- 1: CLOCK_MONOTONIC on Linux, where the bench runs.
  if ffi.C.clock_gettime(1, ts) ~= 0 then error("clock_gettime failed") end
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 1000 / RATE
local next_at = nil
function delay()
  local now = now_ms()
  -- Slots missed by more than 0.1 s (the server fell behind) are dropped,
  -- not sent in a burst when it catches up.
  if next_at == nil or next_at < now - 100 then next_at = now end
  next_at = next_at + interval
  local wait = next_at - now
  if wait < 0 then return 0 end
  return math.floor(wait)
end
"""


def wrk(url: str, seconds: int, connections: int, rate: float | None = None) -> Load:
    """``connections`` connections for ``seconds``; with ``rate``, paced to
    about ``rate`` requests/s in all (as wrk2's ``-R``: the rate achieved is
    what the Load reports, lower only if the server cannot keep up)."""
    args = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        # A browser's user agent, so the redirect runs its bot check as
        # for a real visitor (wrk sends none).
        "-H",
        f"User-Agent: {BROWSER}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if rate:
            script = Path(tmp) / "rate.lua"
            script.write_text(_PACER.replace("RATE", f"{rate:.3f}"))
            args += ["-s", str(script)]
        before = _children_cpu()
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
        spent = _children_cpu() - before
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} responses were not redirects:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Load(rps, p50, p99, spent, requests)


def _children_cpu() -> float:
    """CPU of this process's reaped children: wrk's, read around its run.
    (The benches reap no other child meanwhile: the system bench's services
    are not watched while wrk runs.)"""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None without /proc)."""
    fields = _stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid``, of its children that have exited, and of those
    running now: PostgreSQL's postmaster and its backends, say."""
    fields = _stat(pid)
    if fields is None:
        return None
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _stat(int(entry.name))
            if child is not None and child[1] == str(pid):
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else None


def measured(
    url: str, seconds: int, connections: int, pids: dict[str, int]
) -> tuple[Load, dict[str, float]]:
    """One wrk run, and the CPU each of ``pids`` spent per request meanwhile:
    a run's throughput alone cannot tell a slower program from a busier machine."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    load = wrk(url, seconds, connections)
    cost: dict[str, float] = {}
    for name, pid in pids.items():
        start, end = before[name], cpu_seconds(pid)
        if start is not None and end is not None and load.requests:
            cost[name] = (end - start) / load.requests * 1e6
    return load, cost
