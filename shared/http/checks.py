"""Readiness checks shared by the services."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.http.health import Check
from shared.jetstream import topology
from shared.jetstream.topology import Consumer


def nats_connected(nc: Client) -> Check:
    async def check() -> str | None:
        return None if nc.is_connected else "not connected to NATS"

    return check


def consumer(js: JetStreamContext, expected: Consumer) -> Check:
    """The consumer exists and is one the worker loop can work on."""

    async def check() -> str | None:
        info = await asyncio.wait_for(js.consumer_info(expected.stream, expected.name), 2)
        return topology.mismatch(expected, info.config)

    return check


def database(pool: asyncpg.Pool) -> Check:
    async def check() -> str | None:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
        return None

    return check


def synced(event: asyncio.Event, what: str) -> Check:
    """A KV bucket the service follows has delivered its initial values."""

    async def check() -> str | None:
        return None if event.is_set() else f"{what} not loaded yet"

    return check
