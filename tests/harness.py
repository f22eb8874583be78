"""Helpers for tests: run ASGI apps and workers in-process, wait on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
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


async def burst(
    bases: list[str], path: str, total: int, headers: dict[str, str], at_once: int = 200
) -> Counter[int]:
    """``total`` GETs of ``path``, spread over the servers at ``bases``, at most
    ``at_once`` in flight; the count of each status.

    Each request has a connection of its own (``connection: close``), sent
    as raw bytes: httpx's pool, with hundreds queued, spends quadratic time
    choosing connections, and on a busy machine that starved the loop long
    enough for a kept-alive connection to reach the server's idle timeout
    just as the next request was written (a ReadError, not the server's
    answer)."""
    slots = asyncio.Semaphore(at_once)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def one(i: int) -> int:
        host, port = bases[i % len(bases)].removeprefix("http://").rsplit(":", 1)
        request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{extra}\r\n"
        async with slots:
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(request.encode())
                line = await reader.readline()
                await reader.read()  # to the server's close
            finally:
                writer.close()
                await writer.wait_closed()
        assert line.startswith(b"HTTP/1.1 "), line
        return int(line.split(b" ")[1])

    return Counter(await asyncio.gather(*(one(i) for i in range(total))))


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
    """``LINKFLOW_<SERVICE>_PORT`` for every service ``linkflow up`` runs, all distinct."""
    return {
        f"LINKFLOW_{name.upper()}_PORT": str(port)
        for name, port in zip(SERVICES, free_ports(len(SERVICES)), strict=True)
    }
