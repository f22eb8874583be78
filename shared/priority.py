"""The CPU priority of linkflow's own processes: the work behind the
redirect (the workers, webhooks, their PostgreSQL) lowered once it is
ready, so that it yields the CPU to the gateway, and raised back to its
starter's priority for its stop.

Starting and stopping are bounded, one-off work that a low priority
stretches without bound while the CPUs stay busy: a worker restarted
beside a storm took over 30 s to answer, and one stopped in the idle class
during a storm was still stopping 30 s after its SIGTERM. So a process is
lowered only once it is ready, and it leaves the background when it is
told to stop, whoever tells it (:func:`leave_background`).

"Lowered" is three things: nice on every thread, nice on its session's
scheduling autogroup (CONFIG_SCHED_AUTOGROUP, on in most distributions:
autogroups share the CPU equally and a task's own nice only ranks it
within its group), and, where asked and allowed, an idle-class CPU cgroup.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path

from shared.settings import Placement, load

# cgroup v1's CPU hierarchy, where one group can be made the idle class.
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
BACKGROUND_CGROUP = "linkflow-background"
# Placement.starter's variable, set by the starter of a process it may lower.
STARTER = "LINKFLOW_STARTER"
_CPU_LINE = re.compile(rb"^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$", re.M)


@functools.cache
def background_group() -> str | None:
    """With ``LINKFLOW_BACKGROUND_CGROUP=on``: a cgroup whose tasks get a
    CPU only when no other task wants it (``cpu.idle``), where this process
    may make one (cgroup v1's cpu hierarchy, as root or delegated), as a
    path under the hierarchy's root. None
    otherwise (off, the default, or a cgroup v2 system, which needs a
    delegated subtree): nice and the autogroup alone then.

    Measured (docs/benchmarks.md, 2026-12-02): with PostgreSQL out of it
    (the gateway reads PostgreSQL too), the gateway waits 122 ms a second
    for a CPU at steady rates against 138 without it, the p99 and the
    sustained rate the same. Off by default: a process in it gets next to
    no CPU while both are busy, and anything that needs it then (a stop
    signal from outside before the process has run its handler) waits."""
    if not load(Placement).background_cgroup:
        return None
    group = CPU_CGROUP / BACKGROUND_CGROUP
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.idle").write_text("1\n")
    except OSError:
        return None
    return f"/{BACKGROUND_CGROUP}"


def cpu_group(pid: int) -> str | None:
    """The process's group in cgroup v1's cpu hierarchy, as a path under
    its root ("/" for the root itself); None without one, or if it is gone."""
    try:
        found = _CPU_LINE.search(Path(f"/proc/{pid}/cgroup").read_bytes())
    except OSError:
        return None
    return os.fsdecode(found.group(1)) if found else None


def parent(pid: int) -> int | None:
    """The parent of ``pid``, None if it is gone. Bytes: a process's name
    (any user's to choose) need not be UTF-8."""
    try:
        return int((Path(f"/proc/{pid}/stat")).read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's backends)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent(int(entry.name)) == pid
    ]


def _autogroup_nice(pid: int, nice: int) -> int | None:
    """The nice of the autogroup ``pid`` is in ("/autogroup-12 nice 0"), for
    ``pid`` at ``nice``; None without the file (a kernel built without
    autogroups). A process in none (the file empty: a session that never
    called setsid, as a CI runner's can be, or autogroups turned off)
    competes as one task at its own nice, so a group at that nice is its
    equal (and with autogroups off, writing it fails harmlessly)."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    if not fields:
        return nice
    try:
        return int(fields[-1])
    except ValueError:
        return None


def _set_tasks(pid: int, value: int) -> None:
    """Every thread of ``pid`` at nice ``value``, until a listing finds none
    left unset (a thread started meanwhile by one not yet set)."""
    done: set[int] = set()
    while True:
        try:
            tasks = {int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()} - done
        except OSError:  # gone
            return
        if not tasks:
            return
        for task in tasks:
            # Raising a priority needs CAP_SYS_NICE: a user's own process
            # stays where it is.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, task, value)
        done |= tasks


def _place(pid: int, nice: int, autogroup: int | None, group: str | None) -> None:
    """One process: its threads at ``nice``; the autogroup of the session it
    leads at ``autogroup``, written from here rather than by the process (a
    process that changed its user, PostgreSQL, may no longer write its own
    /proc entries); into the cpu ``group`` (a path under the hierarchy's
    root) when one is given."""
    _set_tasks(pid, nice)
    if autogroup is not None:
        with contextlib.suppress(OSError):  # no autogroups here: nice alone decides
            Path(f"/proc/{pid}/autogroup").write_text(f"{autogroup}\n")
    # Only ever into or out of linkflow's own group: a process that some
    # other group holds (a quota an operator set) stays in it.
    ours = f"/{BACKGROUND_CGROUP}"
    if group is not None and ours in (group, cpu_group(pid)):
        with contextlib.suppress(OSError):
            (CPU_CGROUP / group.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")


def place_tree(root: int, nice: int, autogroup: int | None, group: str | None) -> None:
    """``root`` and its children placed as :func:`_place` says: the parent
    first, then its children until a listing finds no new one (a child
    forked meanwhile by a parent not yet placed would otherwise keep its
    old priority for its whole life). What they fork later inherits it."""
    done: set[int] = set()
    pending = [root]
    while pending:
        for pid in pending:
            # Still the one listed (not a reused pid) and still there.
            if pid == root or parent(pid) == root:
                _place(pid, nice, autogroup, group)
        done.update(pending)
        pending = [c for c in children(root) if c not in done]


def priority_of(pid: int) -> tuple[int, int | None, str | None]:
    """(nice, its autogroup's nice, its cpu group) of ``pid``: where to
    place a process back at ``pid``'s priority."""
    nice = os.getpriority(os.PRIO_PROCESS, pid)
    return nice, _autogroup_nice(pid, nice), cpu_group(pid)


def leave_background() -> bool:
    """For a service told to stop: if its starter (``linkflow up``) lowered
    it, back to the starter's priority, so that the stop takes its few
    hundred milliseconds of CPU beside a storm. Called from the stop
    signal's handler, which is all that must wait for a CPU at the low
    priority. A process acts only if its parent is the starter that
    :data:`STARTER` names: one started nice by anyone else (a shell's
    ``nice -n 10``, a container's init) stops as it is. False if it could
    not raise itself (raising a priority needs root)."""
    starter = os.getppid()
    if load(Placement).starter != starter:
        return True
    try:
        nice, autogroup, group = priority_of(starter)
    except OSError:  # the starter is gone
        return True
    if os.getppid() != starter:  # gone meanwhile: what was read may be another's
        return True
    _place(os.getpid(), nice, autogroup, group)
    return os.getpriority(os.PRIO_PROCESS, 0) <= nice
