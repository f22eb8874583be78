"""A service's NATS connection (shared.jetstream.bus) when NATS is not up yet."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from shared.cli.servers import NatsServer, free_port
from shared.jetstream import bus
from tests.harness import eventually, soon


async def test_a_service_started_before_nats_says_so_once_then_connects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there yet
    url = f"nats://127.0.0.1:{port}"

    def said(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="shared.jetstream.bus"):
        connecting = asyncio.create_task(bus.connect(url, "early"))
        await eventually(soon(lambda: bool(said("cannot reach NATS"))), 15, "the warning")
        nats = NatsServer(tmp_path / "nats", port=port).start()
        try:
            nc = await asyncio.wait_for(connecting, 30)
            await bus.close(nc)
        finally:
            nats.stop()
    # Said once however many tries it took, and said when it got through.
    [waiting] = said("cannot reach NATS")
    assert waiting.startswith(f"early: cannot reach NATS at {url} yet (")
    assert waiting.endswith("); retrying until it answers")
    assert said("connected to NATS") == ["early: connected to NATS"]
