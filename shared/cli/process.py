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

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from shared.priority import STARTER, background_group, place_tree, priority_of

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGKILL when the thread that started
    the process ends. Linux only; elsewhere nothing happens."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Process:
    """One child process; its output goes to ``log_path`` (appended), or to
    this process's own output when None."""

    def __init__(self, log_path: Path | None) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._nice = 0
        self._lowered = False

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
        if nice > 0:  # this process is the one it returns to for its stop
            env = {**(os.environ if env is None else env), STARTER: str(os.getpid())}
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
        self._lowered = False

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
        # Relative to this process's own, as os.nice in the child would be.
        value = min(os.getpriority(os.PRIO_PROCESS, 0) + self._nice, 19)
        group = background_group() if idle else None
        place_tree(self.proc.pid, value, self._nice, group)
        self._lowered = True
        return True

    def to_foreground(self) -> None:
        """Back at this process's own priority, with its children: what it
        is told next (a stop) takes its bounded CPU beside a storm."""
        if self.proc is not None and self._lowered and self.running:
            place_tree(self.proc.pid, *priority_of(os.getpid()))
        self._lowered = False

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
            if sig != signal.SIGKILL:
                self.to_foreground()
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
