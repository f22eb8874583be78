"""Readiness checks shared by the services."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.http.health import Check


def nats_connected(nc: Client) -> Check:
    async def check() -> str | None:
        return None if nc.is_connected else "not connected to NATS"

    return check


def consumer_exists(js: JetStreamContext, stream: str, consumer: str) -> Check:
    async def check() -> str | None:
        await asyncio.wait_for(js.consumer_info(stream, consumer), 2)
        return None

    return check


def database(pool: asyncpg.Pool) -> Check:
    async def check() -> str | None:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
        return None

    return check
