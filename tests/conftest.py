"""Servers and per-test isolation: every test that needs them gets a
database of its own on the session's PostgreSQL and a nats-server of its own
(so its streams, consumers and buckets are its own, whatever ran before or
runs beside it under pytest-xdist). With ``LINKFLOW_TEST_NATS_URL`` or
testcontainers, tests share one server, emptied before each test, and must
not run in parallel."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from shared.cli.servers import NatsServer
from shared.jetstream import bus, topology
from shared.settings import WorkerSettings
from tests.servers import Servers, migrate_main, start

# Small delays so that retries and dead-lettering happen within a test.
TEST_WORKER = WorkerSettings(
    workers=1,
    bulk_limit=200,
    max_attempts=3,
    min_retry_delay=0.05,
    max_retry_delay=0.2,
    ack_wait=1.0,
)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory of the test's own, outside pytest's basetemp (for the
    reason below: a PostgreSQL a test starts there, as ``linkflow up`` does,
    would stop when another pytest session starts). Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="linkflow-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def session_servers() -> Iterator[Servers]:
    # Not under pytest's basetemp: each new pytest session makes
    # /tmp/pytest-of-<user> private again (mode 700), and PostgreSQL, running
    # as the pgserver user when tests run as root, then cannot reach its data
    # directory and stops (seen: a second `pytest` beside `just test`).
    home = Path(tempfile.mkdtemp(prefix="linkflow-test-servers-"))
    s = start(home)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def servers(session_servers: Servers, tmp_path: Path) -> Iterator[Servers]:
    """The session's PostgreSQL, and JetStream of this test's own."""
    if session_servers.nats_url:
        yield session_servers
        return
    nats = NatsServer(tmp_path / "jetstream").start()
    try:
        yield dataclasses.replace(session_servers, nats_url=nats.url, cleanups=[])
    finally:
        nats.stop()


async def reset_jetstream(nc: Client, worker: WorkerSettings = TEST_WORKER) -> None:
    js = nc.jetstream()
    for name in (*(s.name for s in topology.streams(3600)), *(f"KV_{b}" for b in topology.BUCKETS)):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await topology.provision(js, 7 * 86400, {c.service: worker for c in topology.CONSUMERS})


@pytest.fixture
async def nc(servers: Servers) -> AsyncIterator[Client]:
    conn = await bus.connect(servers.nats_url, "tests", forever=False)
    await reset_jetstream(conn)
    yield conn
    await conn.drain()


@pytest.fixture
async def db_url(servers: Servers) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = servers.pg_url(name)
    await migrate_main(url)
    yield url
    conn = await asyncpg.connect(servers.pg_url("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # The webhooks service's, where a test made one (tests/e2e).
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}_webhooks" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path
