"""What the embedded servers and services leave behind: nothing, even when
whoever started them is killed (a CI timeout, kill -9 of `linkflow up`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from shared import roster
from shared.cli.servers import PostgresServer, wait_until
from shared.priority import BACKGROUND_CGROUP, cpu_group


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_servers_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from shared.cli.servers import NatsServer, PostgresServer
        nats = NatsServer(Path({str(tmp_path / "nats")!r})).start()
        pg = PostgresServer(Path({str(tmp_path / "pg")!r}), durable=False).start()
        print(nats.proc.pid, pg.proc.pid, flush=True)
        threading.Event().wait()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
        parent.kill()
    wait_until(lambda: not any(alive(pid) for pid in pids), 15, "the servers to go")


def test_embedded_postgres_can_yield_the_cpu(tmp_path: Path) -> None:
    """`linkflow up` starts PostgreSQL (mostly the workers') niced like them,
    once it accepts connections, but not in the idle class."""
    pg = PostgresServer(tmp_path / "pg", durable=False, nice=roster.BACKGROUND).start()
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pg.pid) == min(own + roster.BACKGROUND, 19)
        if Path("/proc/self/autogroup").exists():
            group = Path(f"/proc/{pg.pid}/autogroup").read_text().split()
            assert group[-2:] == ["nice", str(roster.BACKGROUND)]
        # Never the idle class: the gateway reads it too.
        assert cpu_group(pg.pid) != f"/{BACKGROUND_CGROUP}"
    finally:
        pg.stop()
