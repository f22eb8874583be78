"""``linkflow up``'s own PostgreSQL and another local user: over TCP nobody
gets in without a password, the superuser included, even on a cluster an
older ``linkflow up`` made trusting everyone; each service gets its own
role's URL and no other."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import asyncpg
import httpx
import pytest

from shared.cli.servers import PostgresServer
from shared.cli.supervisor import Child, Supervisor
from tests.harness import count, eventually, key_header, service_ports, soon, supervised
from tests.servers import Servers

SERVICES = ("link", "click_recorder", "cache_refresher", "analytics")
# What a password-less or wrongly-passworded client meets.
REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


@pytest.fixture
def up_env(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """linkflow up with its own PostgreSQL (no database URL given), on the
    test's nats-server and ports of its own."""
    for name in ("LINKFLOW_DATABASE_URL", "LINKFLOW_ANALYTICS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINKFLOW_NATS_URL", servers.nats_url)
    for key, value in service_ports().items():
        monkeypatch.setenv(key, value)
    # 5432 taken (by this test if it is free), so that linkflow up takes a
    # free port: two tests beside each other would both find 5432 free.
    try:
        held: socket.socket | None = socket.create_server(("127.0.0.1", 5432))
    except OSError:  # taken already
        held = None
    try:
        yield
    finally:
        if held is not None:
            held.close()


@pytest.fixture
async def no_services(up_env: None, tmp_path: Path) -> AsyncIterator[Supervisor]:
    """linkflow up's servers and migration alone, over the data directory of
    an older linkflow up (initdb --auth=trust, no password anywhere)."""
    PostgresServer(tmp_path / "pg", durable=False).start().stop()
    sup = Supervisor(tmp_path, services=())
    await asyncio.to_thread(sup.start)
    try:
        yield sup
    finally:
        await asyncio.to_thread(sup.stop)


async def connects(url: str) -> bool:
    conn = await asyncpg.connect(url)
    await conn.close()
    return True


async def test_up_postgres_takes_no_connection_without_its_password(
    no_services: Supervisor, tmp_path: Path
) -> None:
    assert no_services.pg is not None
    port = no_services.pg.port
    for user in ("postgres", *(f"linkflow_{s}" for s in SERVICES)):
        for secret in ("", ":wrong-password"):
            with pytest.raises(REFUSED):
                await connects(f"postgresql://{user}{secret}@127.0.0.1:{port}/linkflow")
    # The passwords: made once, beside the data, for this user alone.
    kept = tmp_path / "pg-passwords.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    passwords = json.loads(kept.read_text())
    assert await connects(
        f"postgresql://postgres:{quote(passwords['postgres'], safe='')}@127.0.0.1:{port}/linkflow"
    )
    for s in SERVICES:
        database = "linkflow_analytics" if s == "analytics" else "linkflow"
        secret = quote(passwords[s], safe="")
        assert await connects(f"postgresql://linkflow_{s}:{secret}@127.0.0.1:{port}/{database}")
    # The socket, the one way in without a password, is in a directory only
    # its owner may open.
    assert stat.S_IMODE(no_services.pg.data_dir.stat().st_mode) & 0o077 == 0


def database_urls(child: Child) -> dict[str, str]:
    return {k: v for k, v in child.env.items() if k.endswith("DATABASE_URL")}


async def test_up_gives_each_service_its_own_role(up_env: None, tmp_path: Path) -> None:
    async with supervised(tmp_path) as sup:
        for child in sup.children:
            urls = database_urls(child)
            setting = {
                "analytics": "LINKFLOW_ANALYTICS_DATABASE_URL",
                "webhooks": "LINKFLOW_WEBHOOKS_DATABASE_URL",  # a database of its own
            }.get(child.name, "LINKFLOW_DATABASE_URL")
            assert set(urls) == {setting}, (child.name, sorted(urls))
            assert urlsplit(urls[setting]).username == f"linkflow_{child.name}"
        passwords = set(json.loads((tmp_path / "pg-passwords.json").read_text()).values())
        for child in sup.children:
            # No other role's password (nor the superuser's) in its environment.
            (own,) = database_urls(child).values()
            held = {p for p in passwords if any(p in v for v in child.env.values())}
            assert held == {unquote(urlsplit(own).password or "")}, child.name
        # Each does its work as its role: a link made, its click recorded.
        await eventually(soon(lambda: sup.ready_after is not None), 90, "every service ready")
        gateway = f"http://127.0.0.1:{os.environ['LINKFLOW_LINK_PORT']}"
        async with httpx.AsyncClient(base_url=gateway, headers=key_header(tmp_path)) as http:
            r = await http.post("/api/links", json={"url": "https://example.com", "code": "own"})
            assert r.status_code == 201, r.text
            assert (await http.get("/own")).status_code == 302
        owner = (tmp_path / "postgres.url").read_text().strip()

        async def recorded() -> bool:
            return await count(owner, "SELECT count(*) FROM clicks WHERE code = 'own'") == 1

        await eventually(recorded, 30, "the click recorded by the recorder's role")
        assert sup.not_ready == {}
