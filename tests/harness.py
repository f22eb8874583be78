"""Helpers for tests: run ASGI apps and workers in-process, wait on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from shared import roster
from shared.cli.servers import free_port, free_ports
from shared.cli.supervisor import Supervisor
from shared.http.serve import uvicorn_server


def soon(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain condition as ``eventually`` polls it."""

    async def poll() -> bool:
        return check()

    return poll


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 15, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)  # wait-ok: polling interval of a deadline wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free port (real HTTP), lifespan included."""
    port = free_port()
    server = uvicorn_server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await eventually(started, 20, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def supervised(home: Path) -> AsyncIterator[Supervisor]:
    """``linkflow up`` (its supervisor, every service a process of its own)
    with the environment as it is now, stopped when the block ends."""
    sup = Supervisor(home, log_to_files=True)
    await asyncio.to_thread(sup.start)
    watcher = threading.Thread(target=sup.watch, daemon=True)
    watcher.start()
    try:
        yield sup
    finally:
        await asyncio.to_thread(sup.stop)
        watcher.join(5)


@contextlib.asynccontextmanager
async def running(
    loop: Callable[[asyncio.Event], Awaitable[None]], copies: int = 1
) -> AsyncIterator[asyncio.Event]:
    """Run a worker loop as tasks until the block ends; stopping is graceful."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop(stop)) for _ in range(copies)]
    try:
        yield stop
    finally:
        stop.set()
        for t in tasks:
            await t


async def count(url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


def bearer(key: str) -> dict[str, str]:
    """The header that carries an API key."""
    return {"authorization": f"Bearer {key}"}


def key_header(home: Path) -> dict[str, str]:
    """The header for the admin key that ``linkflow up`` kept in ``home``."""
    return bearer((home / "admin.key").read_text().strip())


def linkflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``linkflow ARGS`` in a process of its own, ``env`` over this one's."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SERVICES = tuple(s.name for s in roster.ALL)


def service_ports() -> dict[str, str]:
    """``LINKFLOW_<SERVICE>_PORT`` for the four services, all distinct."""
    return {
        f"LINKFLOW_{name.upper()}_PORT": str(port)
        for name, port in zip(SERVICES, free_ports(len(SERVICES)), strict=True)
    }
