"""What ``linkflow bench`` reads from wrk and from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shared.cli.wrk import _ms, cpu_seconds


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
