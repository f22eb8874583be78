"""`linkflow probe`, the image's health check, against a real health endpoint."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette

from shared.cli.servers import free_port
from shared.http.health import routes
from tests.harness import linkflow, serve


async def test_probe_finds_the_service_that_answers() -> None:
    async with serve(Starlette(routes=routes({}))) as url:
        port = url.rsplit(":", 1)[1]
        elsewhere = str(free_port())
        env = {f"LINKFLOW_{s}_PORT": elsewhere for s in ("LINK", "ANALYTICS", "CACHE_REFRESHER")}
        # In a thread: the server answers on this event loop.
        done = await asyncio.to_thread(
            linkflow, {**env, "LINKFLOW_CLICK_RECORDER_PORT": port}, "probe"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == f"linkflow probe: click_recorder healthy on :{port}"
        named = await asyncio.to_thread(linkflow, env, "probe", "link")
        assert named.returncode == 1
        assert named.stdout.strip() == "linkflow probe: no healthy link on this host"
