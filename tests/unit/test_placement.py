"""The bench's CPU placement, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.bench import placement

pytestmark = pytest.mark.skipif(
    placement.split() is None, reason="needs Linux and at least two CPUs"
)

# Starts a thread, then another once told to, and reports each as ready.
_CHILD = """
import sys, threading
stop = threading.Event()
def start():
    threading.Thread(target=stop.wait, daemon=True).start()
start(); print("one", flush=True)
sys.stdin.readline(); start(); print("two", flush=True)
sys.stdin.readline()
"""


def _allowed(pid: int) -> dict[str, str]:
    """Each thread's allowed CPUs, as /proc lists them."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found[task.name] = line.split(":", 1)[1].strip()
    return found


def test_split_gives_the_server_one_cpu_and_the_rest_the_others() -> None:
    layout = placement.split()
    assert layout is not None
    assert len(layout.server) == 1
    assert layout.everywhere == frozenset(os.sched_getaffinity(0))
    assert not layout.server & layout.rest
    assert "server under test on CPU" in layout.describe()


def test_pin_moves_every_thread_and_later_threads_follow() -> None:
    layout = placement.split()
    assert layout is not None
    (cpu,) = layout.server
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "one"
            before = _allowed(child.pid)
            assert len(before) >= 2  # the main thread and the first one
            assert set(before.values()) != {str(cpu)}

            placement.pin(layout.server, child.pid)
            assert set(_allowed(child.pid).values()) == {str(cpu)}

            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "two"
            after = _allowed(child.pid)
            assert len(after) > len(before)
            assert set(after.values()) == {str(cpu)}

            placement.pin(layout.everywhere, child.pid)
            assert set(_allowed(child.pid).values()) != {str(cpu)}
        finally:
            child.kill()
