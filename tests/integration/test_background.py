"""Where ``linkflow`` puts the work behind the redirect on the CPU, with
``LINKFLOW_BACKGROUND_CGROUP=on``: a nice process goes to the idle-class
cgroup when the machine lets ``linkflow`` make one, and its children
(PostgreSQL's backends) follow it; a process at the normal priority (the
gateway) stays where it was. Off by default."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from shared.bench.anatomy import children
from shared.cli import process
from shared.cli.process import BACKGROUND_CGROUP, Process
from tests.harness import eventually

# A parent that forks a child, both sleeping: a postmaster and a backend.
SLEEPER = [sys.executable, "-c", "import os, time; os.fork(); time.sleep(30)"]
IN_GROUP = f"/{BACKGROUND_CGROUP}"


def _cpu_group(pid: int) -> str:
    """The process's group in cgroup v1's cpu hierarchy."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    found = re.search(r"^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$", text, re.M)
    return found.group(1) if found else ""


async def test_nice_work_goes_to_the_idle_group_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", "on")
    process._idle_group.cache_clear()
    group = process._idle_group()
    if group is None:
        pytest.skip("no cgroup v1 cpu hierarchy this process may write: nice and autogroups alone")
    assert (group / "cpu.idle").read_text().strip() == "1"
    background, foreground = Process(tmp_path / "bg.log"), Process(tmp_path / "fg.log")
    background.spawn(SLEEPER, nice=19)
    foreground.spawn(SLEEPER)
    try:
        assert _cpu_group(background.pid) == IN_GROUP
        assert _cpu_group(foreground.pid) != IN_GROUP
        forked = await eventually(lambda: _async(children(background.pid)), 10, "its child")
        assert [_cpu_group(c) for c in forked] == [IN_GROUP]
    finally:
        background.stop()
        foreground.stop()
        process._idle_group.cache_clear()


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINKFLOW_BACKGROUND_CGROUP", raising=False)
    process._idle_group.cache_clear()
    try:
        assert process._idle_group() is None
    finally:
        process._idle_group.cache_clear()


async def _async(value: list[int]) -> list[int]:
    return value
