"""The bench's paced load (``linkflow bench --system``'s sustained search)
sends the rate it is asked for, not what 50 connections could."""

from __future__ import annotations

import os
from pathlib import Path

from shared.bench.drain import bare
from shared.bench.wrk import wrk
from shared.cli.servers import free_port, port_open, wait_until


def test_a_paced_load_sends_the_rate_asked(tmp_path: Path) -> None:
    port = free_port()
    server = bare(port, dict(os.environ), tmp_path / "bare.log")
    try:
        wait_until(lambda: port_open(port), 30, "the bare app")
        for rate in (300, 1500):
            load = wrk(f"http://127.0.0.1:{port}/", 3, 50, rate=rate)
            # 50 connections that could each send thousands a second: only
            # the pacing holds them to the rate.
            assert 0.95 * rate <= load.rps <= 1.05 * rate, (rate, load)
            # wrk's own CPU is counted, per request it sent.
            assert 0.9 * 3 * rate <= load.requests <= 1.1 * 3 * rate, load
            assert 0 < load.wrk_cpu_seconds < 3, load
    finally:
        server.stop()
