"""Where ``linkflow`` puts the work behind the redirect on the CPU: a nice
process starts at its starter's priority and, when its owner says it is
ready, yields with the children it forked so far (PostgreSQL's backends):
nice 19 on every thread, its autogroup, and the idle-class cgroup where
``LINKFLOW_BACKGROUND_CGROUP`` (on by default) and the machine allow one.
What it forks later inherits all of it; a process at the normal priority
(the gateway) stays where it was."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TypeVar

import pytest

from shared.cli import process
from shared.cli.process import BACKGROUND_CGROUP, Process, children
from shared.settings import Placement, load
from tests.harness import cpu_group, eventually

# A parent with a thread that forks a child at once and another when told
# (SIGUSR1), all sleeping: a postmaster, its first helper, a later backend.
# wait-ok: the sleeps stand for servers' lives, nothing waits on them.
SLEEPER = [
    sys.executable,
    "-c",
    "import os, signal, threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "signal.signal(signal.SIGUSR1, lambda *_: os.fork())\n"
    "os.fork()\n"
    "time.sleep(30)",
]
IN_GROUP = f"/{BACKGROUND_CGROUP}"
T = TypeVar("T")


def _nices(pid: int) -> set[int]:
    """The nice of each of the process's threads."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks}


def _autogroup_nice(pid: int) -> str | None:
    path = Path(f"/proc/{pid}/autogroup")
    return path.read_text().split()[-1] if path.exists() else None


@pytest.mark.parametrize("cgroup", ["on", "off"])
async def test_nice_work_yields_the_cpu_once_started_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: str
) -> None:
    monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", cgroup)
    process.background_group.cache_clear()
    group = process.background_group()
    if cgroup == "on" and group is None:
        pytest.skip("no cgroup v1 cpu hierarchy this process may write: nice and autogroups alone")
    if group is not None:
        assert (group / "cpu.idle").read_text().strip() == "1"
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if own > 0:
        pytest.skip("the tests run niced: a lowered process would look the same")
    low = 19
    background, foreground = Process(tmp_path / "bg.log"), Process(tmp_path / "fg.log")
    background.spawn(SLEEPER, nice=19)
    foreground.spawn(SLEEPER)
    try:
        await eventually(
            lambda: _async(
                len(_nices(background.pid)) == 1
                and len(list(Path(f"/proc/{background.pid}/task").iterdir())) == 2
            ),
            10,
            "its thread",
        )
        first = await eventually(lambda: _async(children(background.pid)), 10, "its child")
        # Starting: at the starter's priority, so that a start is never starved.
        assert _nices(background.pid) == {own}
        assert cpu_group(background.pid) != IN_GROUP
        assert background.to_background()
        assert not foreground.to_background()
        assert _nices(background.pid) == {low}  # both threads
        assert [_nices(c) for c in first] == [{low}]
        assert _nices(foreground.pid) == {own}
        assert _autogroup_nice(background.pid) in (None, "19")
        assert _autogroup_nice(foreground.pid) in (None, "0")
        assert (cpu_group(background.pid) == IN_GROUP) == (cgroup == "on")
        assert [cpu_group(c) == IN_GROUP for c in first] == [cgroup == "on"]
        assert cpu_group(foreground.pid) != IN_GROUP
        # What it forks later inherits all of it.
        os.kill(background.pid, signal.SIGUSR1)
        both = await eventually(lambda: _async(_two(children(background.pid))), 10, "a later child")
        assert [_nices(c) for c in both] == [{low}, {low}]
        assert [cpu_group(c) == IN_GROUP for c in both] == [cgroup == "on"] * 2
    finally:
        background.stop()
        foreground.stop()
        process.background_group.cache_clear()


def test_on_by_default_and_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINKFLOW_BACKGROUND_CGROUP", raising=False)
    assert load(Placement).background_cgroup
    monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", "off")
    process.background_group.cache_clear()
    try:
        assert process.background_group() is None
    finally:
        process.background_group.cache_clear()


async def _async(value: T) -> T:
    return value


def _two(found: list[int]) -> list[int]:
    return found if len(found) == 2 else []


async def test_a_process_name_that_is_not_utf8_is_no_obstacle(tmp_path: Path) -> None:
    """Any user names their processes: one whose name is not UTF-8 is still
    listed among a parent's children (linkflow up lists PostgreSQL's)."""
    odd = tmp_path / os.fsdecode(b"\xff\xfe")
    # wait-ok: sleep(1) under an odd name stands for any process, not a wait.
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    sleeper = Process(tmp_path / "odd.log")
    sleeper.spawn([str(odd), "30"])
    try:
        await eventually(
            lambda: _async(b"\xff" in Path(f"/proc/{sleeper.pid}/stat").read_bytes()),
            10,
            "its name",
        )
        assert sleeper.pid in children(os.getpid())
    finally:
        sleeper.stop()
