"""What ``linkflow bench`` reads from wrk and from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shared.bench.wrk import _ms, cpu_seconds, rss_mb, tree_cpu_seconds


def test_latency_units() -> None:
    assert _ms("850.00us") == pytest.approx(0.85)
    assert _ms("1.25ms") == pytest.approx(1.25)
    assert _ms("2.01s") == pytest.approx(2010)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_cpu_seconds_counts_what_a_process_spends() -> None:
    start = cpu_seconds(os.getpid())
    assert start is not None
    began = time.process_time()
    while time.process_time() - began < 0.2:  # spend CPU, not wall time
        pass
    spent = cpu_seconds(os.getpid())
    assert spent is not None
    assert 0.1 <= spent - start <= 1.0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) is None  # reaped: no /proc entry


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_tree_cpu_counts_the_children_too() -> None:
    """PostgreSQL's cost is its postmaster's and its backends': a parent
    whose child burns 0.3 s of CPU is charged for it, running or exited."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    script = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE) as parent:
        deadline = time.monotonic() + 10
        spent = 0.0
        while time.monotonic() < deadline:
            spent = tree_cpu_seconds(parent.pid) or 0.0
            if spent >= 0.3:
                break
            time.sleep(0.05)  # wait-ok: polling /proc with a deadline
        assert parent.stdin is not None
        parent.stdin.close()
    assert spent >= 0.3
    own = cpu_seconds(parent.pid)
    assert own is None or own < 0.3


def test_rss_is_read_in_megabytes() -> None:
    rss = rss_mb(os.getpid())
    assert rss is not None
    assert 5 < rss < 2000
