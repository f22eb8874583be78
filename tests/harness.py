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
import httpx

from shared import roster
from shared.cli.servers import free_port, free_ports
from shared.cli.supervisor import Supervisor
from shared.http.serve import uvicorn_server
from shared.settings import Common


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


async def assert_only_the_web_app(
    client: httpx.AsyncClient, path: str, method: str, refused_method: str | None = None
) -> httpx.Response:
    """CORS as every service the web app calls answers it: a preflight and a
    call from the web app's origin (LINKFLOW_APP_URL) are allowed; another
    site's page (holding a visitor's key, say) is refused the preflight and
    gets no allow-origin on a call, and ``refused_method`` is refused to the
    web app too. Returns the web app's GET of ``path``."""
    app = Common().app_url
    ask = {"access-control-request-headers": "authorization,content-type"}
    r = await client.options(
        path, headers={"origin": app, "access-control-request-method": method, **ask}
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == app
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    refusals = [("https://evil.example", method)]
    if refused_method:
        refusals.append((app, refused_method))
    for origin, asked in refusals:
        headers = {"origin": origin, "access-control-request-method": asked, **ask}
        r = await client.options(path, headers=headers)
        assert r.status_code == 400, (origin, asked)
        if origin == app:
            assert asked not in r.headers["access-control-allow-methods"], r.headers
        else:
            assert "access-control-allow-origin" not in r.headers
    r = await client.get(path, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    allowed = await client.get(path, headers={"origin": app})
    assert allowed.headers["access-control-allow-origin"] == app
    return allowed
