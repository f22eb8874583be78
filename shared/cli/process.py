"""A process that ``linkflow`` starts (an embedded server, a service under
``linkflow up``, the bench's load): started in a session of its own,
stopped with a signal, a wait and, past the wait, a kill.

Its own session keeps a Ctrl-C in the terminal from reaching it before its
starter decides the order of shutdown (the gateway before the workers, the
services before the servers). The kernel kills it when its starter dies
(``PR_SET_PDEATHSIG``), so an interrupted test run or a ``kill -9`` of
``linkflow up`` leaves nothing behind holding ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from shared.settings import Placement, load

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGKILL when the thread that started
    the process ends. Linux only; elsewhere nothing happens."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _lower_autogroup(pid: int, nice: int) -> None:
    """Give the session ``pid`` leads, its scheduling autogroup where the
    kernel groups by session (CONFIG_SCHED_AUTOGROUP, on by default in most
    distributions), the same ``nice``. Autogroups share the CPU equally and a
    task's own nice only ranks it within its group, so without this a nice
    service in a session of its own would yield nothing to the gateway's.
    Written from here, not the child: a child that changed its user (the
    embedded PostgreSQL) may no longer write its own /proc entries."""
    # No autogroups here: the process's nice alone decides.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")


# cgroup v1's CPU hierarchy, where one group can be made the idle class.
_CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
BACKGROUND_CGROUP = "linkflow-background"


@functools.cache
def background_group() -> Path | None:
    """Unless ``LINKFLOW_BACKGROUND_CGROUP=off``: a cgroup whose tasks get a
    CPU only when no other task wants it (``cpu.idle``), where this process
    may make one (cgroup v1's cpu hierarchy, as root or delegated). None
    otherwise (off, or a cgroup v2 system, which needs a delegated subtree):
    nice and the autogroup alone then.

    Measured (docs/benchmarks.md, 2026-12-02): at a steady 3,600 and 5,400
    redirects a second, nice 19 leaves the gateway waiting 112-180 ms a
    second for a CPU and its p99 at 9-19 ms; SCHED_IDLE on each task changes
    nothing (each service is its own autogroup, scheduled as a whole); in
    this group the wait is 72-96 ms/s and the p99 6.5-10 ms."""
    if not load(Placement).background_cgroup:
        return None
    group = _CPU_CGROUP / BACKGROUND_CGROUP
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.idle").write_text("1\n")
    except OSError:
        return None
    return group


def _parent(pid: int) -> int | None:
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
        if entry.name.isdigit() and _parent(int(entry.name)) == pid
    ]


def _lower_tasks(pid: int, value: int) -> None:
    """Every thread of ``pid`` at nice ``value``, until a listing finds none
    left higher (a thread started meanwhile by one not yet lowered)."""
    done: set[int] = set()
    while True:
        try:
            tasks = {int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()} - done
        except OSError:  # gone
            return
        if not tasks:
            return
        for task in tasks:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, task, value)
        done |= tasks


class Process:
    """One child process; its output goes to ``log_path`` (appended), or to
    this process's own output when None."""

    def __init__(self, log_path: Path | None) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._nice = 0

    def spawn(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        nice: int = 0,
    ) -> None:
        """Start it, at this process's own CPU priority. ``nice`` is the one
        it yields to once its owner calls :meth:`to_background` (never a
        raise)."""
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(args),
            env=env,
            user=user,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._nice = nice

    def to_background(self, idle: bool = True) -> bool:
        """Lower a started process, and the children it has forked so far,
        to its ``nice``: every thread's own, its session's autogroup, and,
        with ``idle``, the idle group where there is one (what it forks or
        spawns later inherits all of it). Its owner calls this once the
        process is ready, not at its spawn: starting is bounded, one-off
        work (imports, connections) that nice 19, and the idle class more
        so, stretch without bound while the CPUs stay busy (a worker
        restarted beside a storm took over 30 s to answer, a start beside
        another test's storm over 60 s). False if there is nothing to lower
        (not nice, not running)."""
        if self.proc is None or self._nice <= 0 or not self.running:
            return False
        root = self.proc.pid
        # Relative to this process's own, as os.nice in the child would be.
        value = min(os.getpriority(os.PRIO_PROCESS, 0) + self._nice, 19)
        group = background_group() if idle else None
        # The parent first, then its children until a listing finds no new
        # one: a child forked meanwhile by a parent not yet lowered would
        # keep this process's priority for its whole life.
        done: set[int] = set()
        pending = [root]
        while pending:
            for pid in pending:
                # Still the one listed (not a reused pid) and still there.
                if pid != root and _parent(pid) != root:
                    continue
                _lower_tasks(pid, value)
                _lower_autogroup(pid, self._nice)
                if group is not None:
                    with contextlib.suppress(OSError):
                        (group / "cgroup.procs").write_text(f"{pid}\n")
            done.update(pending)
            pending = [c for c in children(root) if c not in done]
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not running")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> bool:
        """Signal, wait up to ``timeout`` s, then kill. False if it had to be
        killed. It may be spawned again afterwards."""
        if self.proc is None:
            return True
        stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                stopped = False
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return stopped

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
