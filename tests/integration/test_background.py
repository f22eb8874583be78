"""Where ``linkflow`` puts the work behind the redirect on the CPU: a nice
process starts at its starter's priority and, when its owner says it is
ready, yields with the children it forked so far (PostgreSQL's backends):
nice 19 on every thread, its autogroup, and the idle-class cgroup where
``LINKFLOW_BACKGROUND_CGROUP`` (off by default) and the machine allow one.
What it forks later inherits all of it; a process at the normal priority
(the gateway) stays where it was. Told to stop, it stops at its starter's
priority, whoever tells it."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from shared import priority
from shared.cli.process import Process
from shared.cli.servers import free_port
from shared.priority import BACKGROUND_CGROUP, children, cpu_group
from shared.settings import Placement, load
from tests.harness import eventually

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
    """Its autogroup's nice; None without autogroups. One in none (a
    session that never called setsid, as a CI runner's) competes at its own
    nice, which a process raised to its priority takes for its group."""
    path = Path(f"/proc/{pid}/autogroup")
    if not path.exists():
        return None
    fields = path.read_text().split()
    return fields[-1] if fields else str(os.getpriority(os.PRIO_PROCESS, pid))


@pytest.mark.parametrize("cgroup", ["on", "off"])
async def test_nice_work_yields_the_cpu_once_started_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: str
) -> None:
    monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", cgroup)
    priority.background_group.cache_clear()
    group = priority.background_group()
    if cgroup == "on" and group is None:
        pytest.skip("no cgroup v1 cpu hierarchy this process may write: nice and autogroups alone")
    if group is not None:
        assert (priority.CPU_CGROUP / group.lstrip("/") / "cpu.idle").read_text().strip() == "1"
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
        priority.background_group.cache_clear()


def test_off_by_default_and_on_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINKFLOW_BACKGROUND_CGROUP", raising=False)
    priority.background_group.cache_clear()
    try:
        assert not load(Placement).background_cgroup
        assert priority.background_group() is None
        monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", "on")
        assert load(Placement).background_cgroup
    finally:
        priority.background_group.cache_clear()


# A process that, told to stop, writes down where it stops: the nice of
# each of its threads, its autogroup's nice and its cpu group. The first
# takes the signal itself; the second is a service under shared.runner,
# whose lifespan's end writes it.
WHERE = (
    "import os, sys\n"
    "from shared.priority import cpu_group\n"
    "def where():\n"
    "    tasks = os.listdir('/proc/self/task')\n"
    "    nices = sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in tasks})\n"
    "    try:\n"
    "        fields = open('/proc/self/autogroup').read().split()\n"
    "        group = fields[-1] if fields else str(os.getpriority(os.PRIO_PROCESS, 0))\n"
    "    except OSError:\n"
    "        group = None\n"
    "    open(sys.argv[1], 'w').write(f'{nices} {group} {cpu_group(os.getpid())}')\n"
)
# wait-ok: the sleep stands for a server's life, nothing waits on it.
STOPPING = WHERE + (
    "import signal, threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "def stop(*_):\n"
    "    where()\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)
SERVICE = WHERE + (
    "import contextlib\n"
    "from starlette.applications import Starlette\n"
    "from shared.runner import run_service, serve\n"
    "@contextlib.asynccontextmanager\n"
    "async def lifespan(app):\n"
    "    print('up', flush=True)\n"
    "    yield\n"
    "    where()\n"
    "run_service(serve(Starlette(lifespan=lifespan), '127.0.0.1', int(sys.argv[2])))\n"
)


@pytest.fixture(params=["on", "off"])
def placement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The cgroup on or off; skipped where a lowered process would look no
    different (the tests run niced, or as a user who cannot raise one back)."""
    if os.getpriority(os.PRIO_PROCESS, 0) > 0 or os.geteuid() != 0:
        pytest.skip("raising a priority back needs root and tests at nice 0")
    monkeypatch.setenv("LINKFLOW_BACKGROUND_CGROUP", request.param)
    priority.background_group.cache_clear()
    if request.param == "on" and priority.background_group() is None:
        pytest.skip("no cgroup v1 cpu hierarchy this process may write")
    yield request.param
    priority.background_group.cache_clear()


async def _async(value: T) -> T:
    return value


def _two(found: list[int]) -> list[int]:
    return found if len(found) == 2 else []


def _here(nice: int = 0) -> str:
    """Where a process stopped at this test's own priority says it stopped."""
    return f"[{nice}] {_autogroup_nice(os.getpid())} {cpu_group(os.getpid())}"


async def _stopped_at(
    tmp_path: Path, script: str, outside: bool, args: Sequence[str] = (), nice: int = 19
) -> str:
    """Start ``script`` (after ``args``: ``nice -n 10``) with a ``nice`` to
    be lowered to, lower it once it says it is up, stop it with SIGTERM
    (from outside, as an operator's ``kill``, or by its owner's stop) and
    return where it stopped."""
    log, where = tmp_path / "stopping.log", tmp_path / "where"
    child = Process(log)
    command = [*args, sys.executable, "-c", script, str(where), str(free_port())]
    child.spawn(command, nice=nice)
    try:
        await eventually(lambda: _async("up" in log.read_text()), 20, "it up")
        if nice:
            assert child.to_background()
            assert _nices(child.pid) == {19}
        if outside:
            os.kill(child.pid, signal.SIGTERM)
            await eventually(lambda: _async(child.returncode is not None), 20, "it stopped")
            assert child.returncode == 0
        else:
            assert child.stop()
    finally:
        child.stop()
    return where.read_text()


async def test_its_owner_stops_a_lowered_process_at_the_owners_priority(
    tmp_path: Path, placement: str
) -> None:
    """linkflow up's stop (Ctrl-C, a restart) raises a lowered process,
    every thread, before it signals it: a stop is bounded work a storm
    would starve."""
    assert await _stopped_at(tmp_path, STOPPING, outside=False) == _here()


async def test_a_lowered_service_stopped_from_outside_stops_at_its_starters_priority(
    tmp_path: Path, placement: str
) -> None:
    """A service's own stop signal handler raises it back (a ``kill`` from
    an operator, which linkflow up never hears of)."""
    assert await _stopped_at(tmp_path, SERVICE, outside=True) == _here()


async def test_a_service_someone_else_started_nice_stops_as_it_is(
    tmp_path: Path, placement: str
) -> None:
    """Only the starter that lowered a service is one it returns to: one
    that a shell started at ``nice -n 10`` stops at nice 10."""
    assert await _stopped_at(
        tmp_path, SERVICE, outside=True, args=["nice", "-n", "10"], nice=0
    ) == _here(10)


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


def test_a_starter_in_no_autogroup_is_raised_to_as_its_own_nice() -> None:
    """A starter in no autogroup (its session never called setsid, as a CI
    runner's: the file is empty) competes as one task at its own nice; a
    process raised to its priority takes that nice for its group, rather
    than keeping its group at 19."""
    init = Path("/proc/1/autogroup")
    if not init.exists() or init.read_text().strip():
        pytest.skip("no autogroups here, or init is in one")
    nice = os.getpriority(os.PRIO_PROCESS, 1)
    assert priority.priority_of(1)[:2] == (nice, nice)
