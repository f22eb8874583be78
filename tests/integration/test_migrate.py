"""``linkflow migrate`` is idempotent and owns the consumers' configuration."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from nats.aio.client import Client

from shared.cli.migrate import migrate_all
from shared.jetstream import topology
from tests.harness import count, linkflow
from tests.servers import Servers


async def test_migrate_twice_and_update_consumer(servers: Servers, nc: Client, db_url: str) -> None:
    env = {
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url + "_analytics",
    }
    await migrate_all(env)
    await migrate_all(env)
    js = nc.jetstream()
    info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
    assert info.config.max_deliver == 5
    assert info.config.filter_subject == "clicks.>"
    # A changed setting reaches the existing consumer (no silent old config).
    await migrate_all({**env, "LINKFLOW_CLICK_RECORDER_MAX_ATTEMPTS": "8"})
    info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
    assert info.config.max_deliver == 8
    streams = {s.config.name for s in await js.streams_info()}
    assert {"LINKS", "CLICKS", "DLQ", "KV_links"} <= streams
    clicks = await js.stream_info("CLICKS")
    assert clicks.config.max_age == 7 * 86400


async def test_migrate_over_a_unix_socket(servers: Servers, nc: Client) -> None:
    """A libpq URL with no host but ``?host=<socket dir>`` works as any other."""
    if servers.pg_socket_dir is None:
        pytest.skip("PostgreSQL is not the embedded one: no Unix socket to test")
    name = f"t_{uuid.uuid4().hex[:12]}"
    # The socket's name carries the port: .s.PGSQL.<port> in that directory.
    port = urlsplit(servers.pg_url("postgres")).port
    sockets = quote(str(servers.pg_socket_dir), safe="")
    urls = [
        f"postgresql://postgres:@/{name}?host={servers.pg_socket_dir}&port={port}",
        f"postgresql://postgres@/{name}_analytics?host={sockets}&port={port}",
    ]
    env = {
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": urls[0],
        "LINKFLOW_ANALYTICS_DATABASE_URL": urls[1],
    }
    try:
        await migrate_all(env)
        await migrate_all(env)
        assert await count(urls[0], "SELECT count(*) FROM links") == 0
        assert await count(urls[1], "SELECT count(*) FROM click_stats") == 0
    finally:
        conn = await asyncpg.connect(servers.pg_url("postgres"))
        try:
            for db in (name, f"{name}_analytics"):
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://postgres:@/linkflow?host=/no/such/dir", "No such file or directory"),
        ("postgresql://postgres@127.0.0.1:1/linkflow", "Connect call failed"),
        ("mysql://root@localhost/linkflow", "not a PostgreSQL URL"),
    ],
)
def test_a_database_url_that_cannot_work_is_one_clear_line(
    servers: Servers, url: str, says: str
) -> None:
    done = linkflow(
        {"LINKFLOW_NATS_URL": servers.nats_url, "LINKFLOW_DATABASE_URL": url}, "migrate"
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("linkflow migrate: cannot migrate the database at ")
    assert says in lines[0]
