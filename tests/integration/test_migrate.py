"""``linkflow migrate`` is idempotent and owns the consumers' configuration."""

from __future__ import annotations

from nats.aio.client import Client

from shared import topology
from shared.migrate import migrate_all
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
