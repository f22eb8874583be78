"""linkflow as ``linkflow up`` runs it, for the tests of this folder: the
supervisor and every service its own process, on the test's servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.cli.supervisor import Supervisor
from tests.harness import service_ports, supervised
from tests.servers import Servers


@pytest.fixture
async def linkflow(
    servers: Servers,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Supervisor]:
    # The nc fixture is not used here: reset JetStream the same way first.
    from shared.jetstream import bus
    from tests.conftest import reset_jetstream

    nc = await bus.connect(servers.nats_url, "e2e-reset", forever=False)
    await reset_jetstream(nc)
    await nc.drain()
    env = {
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        **service_ports(),
        "LINKFLOW_CLICK_RECORDER_MIN_RETRY_DELAY": "50ms",
        **getattr(request, "param", {}),  # a test's own settings, by indirect parametrize
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    async with supervised(tmp_path) as sup:
        yield sup


def gateway_url() -> str:
    return f"http://127.0.0.1:{os.environ['LINKFLOW_LINK_PORT']}"


async def ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as c:
            return (await c.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False
