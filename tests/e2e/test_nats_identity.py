"""A NATS identity per service, against a real nats-server running the rules
of ``deploy/nats.conf``: linkflow works under them, and each user is refused
what is not its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client

from services.link.app import build
from services.link.settings import Settings as LinkSettings
from services.link.wire import read_creds
from shared.cli import permissions
from shared.cli.servers import NatsServer
from shared.cli.supervisor import Supervisor, nats_passwords
from shared.contracts import LINK_REFRESH, LINK_REFRESHED
from shared.http import keys
from shared.jetstream import topology
from shared.settings import Common, WorkerSettings
from tests.harness import bearer, count, eventually, key_header, serve, service_ports
from tests.natsjwt import Operator
from tests.servers import Servers

pytestmark = pytest.mark.e2e


@pytest.fixture
def up(
    servers: Servers,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Supervisor]:
    """``linkflow up`` with its embedded NATS (a user per service), the
    session's PostgreSQL."""
    monkeypatch.delenv("LINKFLOW_NATS_URL", raising=False)
    env = {
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        "LINKFLOW_PUBLIC_URL": "http://sho.rt",
        "LINKFLOW_MIN_RETRY_DELAY": "50ms",
        "LINKFLOW_MAX_ATTEMPTS": "2",
        **service_ports(),
        **getattr(request, "param", {}),  # a test's own settings, by indirect parametrize
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sup = Supervisor(tmp_path, log_to_files=True)
    sup.start()
    watcher = threading.Thread(target=sup.watch, daemon=True)
    watcher.start()
    yield sup
    sup.stop()
    watcher.join(5)


def url(sup: Supervisor, service: str) -> str:
    return f"http://127.0.0.1:{os.environ[f'LINKFLOW_{service.upper()}_PORT']}"


async def all_ready(sup: Supervisor) -> bool:
    async with httpx.AsyncClient(timeout=2) as c:
        for service in permissions.SERVICES:
            try:
                if (await c.get(url(sup, service) + "/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


def violations(sup: Supervisor) -> list[str]:
    assert sup.nats is not None
    logs = [sup.nats.log_path, *(sup.home / f"{s}.log" for s in permissions.SERVICES)]
    return [
        line
        for path in logs
        for line in path.read_text(errors="replace").splitlines()
        if "violation" in line.lower()
    ]


async def test_linkflow_works_under_the_permissions(up: Supervisor, db_url: str) -> None:
    await eventually(lambda: all_ready(up), 60, "every service ready")
    headers = key_header(up.home)
    gateway, analytics = url(up, "link"), url(up, "analytics")
    async with httpx.AsyncClient(headers=headers, timeout=10) as c:
        r = await c.post(gateway + "/api/links", json={"url": "https://a.example/", "code": "perm"})
        assert r.status_code == 201, r.text
        statuses = [(await c.get(gateway + "/perm")).status_code for _ in range(50)]
        assert statuses == [302] * 50

        async def recorded() -> bool:
            return await count(db_url, "SELECT count(*) FROM clicks") == 50

        await eventually(recorded, 30, "50 click rows")

        async def counted() -> bool:
            stats = await c.get(analytics + "/api/stats/links/perm?include_bots=true")
            return bool(stats.json()["total"] == 50)

        await eventually(counted, 30, "50 clicks counted by analytics")

        # The link-change path: gateway -> LINKS -> cache-refresher -> KV -> gateway.
        r = await c.patch(gateway + "/api/links/perm", json={"url": "https://b.example/"})
        assert r.status_code == 200

        async def moved() -> bool:
            r = await c.get(gateway + "/perm")
            return r.headers.get("location") == "https://b.example/"

        await eventually(moved, 10, "the new target")
        pipeline = (await c.get(analytics + "/api/pipeline")).json()
        assert all("error" not in x for x in pipeline["consumers"]), pipeline

        # A click no worker can take: dead-lettered by the recorder and by
        # analytics, listed, replayed and discarded through the analytics API.
        assert up.nats is not None
        admin = await nats.connect(
            (up.home / "nats-admin.url").read_text().strip(), inbox_prefix="_INBOX"
        )
        await admin.jetstream().publish("clicks.perm", b"not json")
        # And a links.* letter, which the cache-refresher replays from the
        # database when analytics asks it to (analytics publishes no links.*).
        links_letter = await admin.jetstream().publish(
            "dlq.LINKS.cache-refresher",
            msgspec.json.encode({"code": "perm", "version": 2}),
            headers={"Linkflow-Original-Subject": "links.updated"},
        )
        await admin.drain()
        r = await c.post(f"{analytics}/api/dlq/{links_letter.seq}/replay")
        assert r.status_code == 200, r.text
        assert r.json()["stream_seq"] is None

        async def dead() -> list[dict[str, object]]:
            items: list[dict[str, object]] = (await c.get(analytics + "/api/dlq")).json()["items"]
            return items if len(items) == 2 else []

        letters = await eventually(dead, 30, "two dead letters")
        seq = letters[0]["seq"]
        assert (await c.post(f"{analytics}/api/dlq/{seq}/replay")).status_code == 200
        for letter in (await c.get(analytics + "/api/dlq")).json()["items"]:
            assert (await c.delete(f"{analytics}/api/dlq/{letter['seq']}")).status_code == 204

        # A backfill reads CLICKS through a consumer of its own.
        r = await c.post(
            analytics + "/api/backfills",
            json={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        )
        assert r.status_code == 202, r.text

        async def backfilled() -> bool:
            got = (await c.get(f"{analytics}/api/backfills/{r.json()['id']}")).json()
            return bool(got["state"] == "done")

        await eventually(backfilled, 30, "the backfill to finish")
        assert (await c.delete(gateway + "/api/links/perm")).status_code == 204
    assert violations(up) == []


@contextlib.asynccontextmanager
async def secured(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, dict[str, str]]]:
    passwords = nats_passwords(tmp_path)
    server = NatsServer(tmp_path / "nats", config=permissions.authorization(passwords)).start()
    try:
        admin = await nats.connect(as_user(server, "admin", passwords))
        js = admin.jetstream()
        await topology.provision(
            js, 3600, {c.service: WorkerSettings() for c in topology.CONSUMERS}
        )
        await admin.drain()
        yield server, passwords
    finally:
        server.stop()


def as_user(server: NatsServer, user: str, passwords: dict[str, str]) -> str:
    return f"nats://{user}:{passwords[user]}@127.0.0.1:{server.port}"


async def refused(nc: Client, errors: list[Exception], action: str, subject: str) -> bool:
    """Publish or subscribe, then wait for the server's verdict."""
    errors.clear()
    if action == "pub":
        await nc.publish(subject, b"{}")
    else:
        await nc.subscribe(subject)
    await nc.flush()

    async def verdict() -> bool:
        return any("permissions violation" in str(e).lower() for e in errors)

    # The server queues its -ERR before the flush's PONG, and nats-py awaits
    # the error callback as it reads it: the verdict is in by now. The short
    # wait is a margin, not the mechanism.
    with contextlib.suppress(AssertionError):
        return await eventually(verdict, 0.3, f"a verdict on {action} {subject}")
    return False


REFUSED = [
    ("click_recorder", "pub", "clicks.x"),
    ("click_recorder", "pub", "links.updated"),
    ("click_recorder", "pub", "$KV.links.x"),
    ("click_recorder", "pub", "dlq.LINKS.cache-refresher"),
    ("click_recorder", "sub", "_INBOX_link.>"),
    ("link", "pub", "$JS.API.CONSUMER.MSG.NEXT.CLICKS.click-recorder"),
    ("link", "pub", "$KV.api_keys.forged"),
    ("link", "pub", "$JS.API.STREAM.DELETE.CLICKS"),
    ("link", "sub", "clicks.>"),
    ("cache_refresher", "pub", "clicks.x"),
    ("cache_refresher", "pub", "$JS.API.CONSUMER.MSG.NEXT.CLICKS.analytics"),
    ("analytics", "pub", "$KV.links.x"),
    ("analytics", "pub", "$KV.api_keys.forged"),
    ("analytics", "pub", "$JS.API.STREAM.PURGE.CLICKS"),
    ("analytics", "pub", "$JS.API.CONSUMER.DELETE.CLICKS.click-recorder"),
    ("analytics", "pub", "$JS.API.CONSUMER.MSG.NEXT.CLICKS.click-recorder"),
    ("analytics", "pub", "$JS.ACK.CLICKS.click-recorder.1.1.1.1.0"),
    # A links.* dead letter is replayed by the cache-refresher, not republished.
    ("analytics", "pub", "links.updated"),
    ("analytics", "pub", "links.deleted"),
    ("link", "pub", LINK_REFRESH),
    ("cache_refresher", "pub", "_INBOX_analytics.x"),
    ("link", "sub", f"{LINK_REFRESHED}.>"),
    # Only a gateway may tell the workers to hold off.
    ("click_recorder", "pub", "redirects.busy"),
    ("analytics", "pub", "redirects.busy"),
    ("cache_refresher", "pub", "redirects.busy"),
    # Only a gateway counts orphan visits; only analytics reads them.
    ("analytics", "pub", "visits.orphan"),
    ("click_recorder", "sub", "visits.orphan"),
]
ALLOWED = [
    ("link", "pub", "clicks.x"),
    ("link", "pub", "$KV.links.x"),
    ("click_recorder", "pub", "dlq.CLICKS.click-recorder"),
    ("analytics", "sub", "links.created"),
    ("analytics", "pub", "$JS.API.CONSUMER.DELETE.CLICKS.backfill-1"),
    ("analytics", "pub", "$JS.ACK.CLICKS.backfill-1.1.1.1.1.0"),
    ("click_recorder", "pub", "dlq.ADVISORIES.click-recorder-max-deliveries"),
    ("admin", "pub", "$KV.api_keys.x"),
    ("link", "pub", "redirects.busy"),
    ("click_recorder", "sub", "redirects.busy"),
    ("analytics", "sub", "redirects.busy"),
    ("analytics", "pub", LINK_REFRESH),
    ("analytics", "sub", f"{LINK_REFRESHED}.x"),
    ("cache_refresher", "sub", LINK_REFRESH),
    ("cache_refresher", "pub", f"{LINK_REFRESHED}.x"),
    # A recorder letter whose replay failed goes back to the DLQ.
    ("analytics", "pub", "dlq.CLICKS.click-recorder"),
    ("link", "pub", "visits.orphan"),
    ("analytics", "sub", "visits.orphan"),
]


def yielded(sup: Supervisor, service: str, consumer: str) -> float:
    """Seconds a service's worker held off for a busy gateway, from its /metrics."""
    text = httpx.get(url(sup, service) + "/metrics", timeout=5).text
    wanted = f'linkflow_worker_yield_seconds_total{{consumer="{consumer}"}} '
    line = next((x for x in text.splitlines() if x.startswith(wanted)), None)
    return float(line.removeprefix(wanted)) if line else 0.0


@pytest.mark.parametrize(
    "up",
    [
        {
            # Loaded enough by the test's own requests; the workers catch up
            # within seconds even if the gateway stays loaded.
            "LINKFLOW_LINK_BUSY_ABOVE": "0.02",
            "LINKFLOW_CLICK_RECORDER_YIELD_LAG": "3s",
            "LINKFLOW_ANALYTICS_YIELD_LAG": "3s",
        }
    ],
    indirect=True,
)
async def test_workers_hold_off_for_a_busy_gateway_under_the_permissions(
    up: Supervisor, db_url: str
) -> None:
    await eventually(lambda: all_ready(up), 60, "every service ready")
    gateway, analytics = url(up, "link"), url(up, "analytics")
    sent = 0
    async with httpx.AsyncClient(headers=key_header(up.home), timeout=10) as c:
        r = await c.post(gateway + "/api/links", json={"url": "https://a.example/", "code": "busy"})
        assert r.status_code == 201, r.text

        async def both_held() -> bool:
            nonlocal sent
            statuses = await asyncio.gather(*(c.get(gateway + "/busy") for _ in range(50)))
            assert {s.status_code for s in statuses} == {302}
            sent += len(statuses)
            return all(
                await asyncio.gather(
                    asyncio.to_thread(yielded, up, "click_recorder", "click-recorder"),
                    asyncio.to_thread(yielded, up, "analytics", "analytics"),
                )
            )

        # redirects.busy from the gateway reaches both workers (their users
        # may subscribe to it) and they hold off.
        await eventually(both_held, 60, "both workers to hold off")

        async def recorded() -> bool:
            return await count(db_url, "SELECT count(*) FROM clicks") == sent

        await eventually(recorded, 30, f"{sent} click rows")

        async def counted() -> bool:
            stats = await c.get(analytics + "/api/stats/links/busy?include_bots=true")
            return bool(stats.json()["total"] == sent)

        await eventually(counted, 30, f"{sent} clicks counted by analytics")
        load = (await c.get(gateway + "/metrics")).text
        assert "\nlinkflow_gateway_load " in load
    assert violations(up) == []


async def test_each_user_is_refused_what_is_not_its_own(tmp_path: Path) -> None:
    async with secured(tmp_path) as (server, passwords):
        for user, action, subject in REFUSED + ALLOWED:
            errors: list[Exception] = []

            async def on_error(exc: Exception, errors: list[Exception] = errors) -> None:
                errors.append(exc)

            nc = await nats.connect(
                as_user(server, user, passwords),
                error_cb=on_error,
                inbox_prefix=permissions.inbox_prefix(user),
            )
            try:
                expected = (user, action, subject) in REFUSED
                assert await refused(nc, errors, action, subject) is expected, (
                    user,
                    action,
                    subject,
                )
            finally:
                await nc.close()


async def test_the_gateway_reads_kv_links_but_cannot_consume_clicks(tmp_path: Path) -> None:
    async with secured(tmp_path) as (server, passwords):
        admin = await nats.connect(as_user(server, "admin", passwords))
        await (await admin.jetstream().key_value(topology.KV_LINKS)).put("k", b"v")
        await admin.drain()
        nc = await nats.connect(as_user(server, "link", passwords), inbox_prefix="_INBOX_link")
        try:
            js = nc.jetstream()
            kv = await js.key_value(topology.KV_LINKS)
            assert (await kv.get("k")).value == b"v"
            ack = await js.publish("clicks.abc", msgspec.json.encode({"id": "1"}))
            assert ack.stream == topology.CLICKS
            sub = await js.pull_subscribe_bind("click-recorder", topology.CLICKS)
            # Refused requests get no answer: the fetch and the put time out.
            with pytest.raises(nats.errors.TimeoutError):
                await sub.fetch(1, timeout=1)
            keys_kv = await js.key_value(topology.KV_KEYS)
            with pytest.raises((asyncio.TimeoutError, nats.errors.TimeoutError)):
                await asyncio.wait_for(keys_kv.put("forged", b"{}"), 2)
        finally:
            await nc.close()


async def test_the_gateway_connects_with_a_creds_file(
    tmp_path: Path, db_url: str, servers: Servers
) -> None:
    """Operator mode, as managed NATS services issue identities: the gateway
    connects with a JWT + NKey creds file on both of its connections (nats-py
    for KV and link events, its own click connection), restricted to the link
    user's rules, and a redirect's click is stored."""
    operator = Operator()
    server = NatsServer(tmp_path / "nats", config=operator.server_config()).start()
    rules = permissions.permissions()
    admin_creds = operator.user_creds(tmp_path, "admin", rules["admin"])
    link_creds = operator.user_creds(tmp_path, "link", rules["link"])
    try:
        admin = await nats.connect(server.url, user_credentials=str(admin_creds))
        await topology.provision(
            admin.jetstream(), 3600, {c.service: WorkerSettings() for c in topology.CONSUMERS}
        )
        key = await keys.create(admin.jetstream(), "admin", (keys.ADMIN,))
        settings = LinkSettings(
            common=Common(
                nats_url=server.url,
                nats_creds=str(link_creds),
                database_url=db_url,
                public_url="http://sho.rt",
            ),
            spool_dir=str(tmp_path / "spool"),
        )
        async with serve(build(settings)) as base, httpx.AsyncClient(base_url=base) as c:
            r = await c.post(
                "/api/links",
                json={"url": "https://c.example/", "code": "creds"},
                headers=bearer(key),
            )
            assert r.status_code == 201, r.text
            assert (await c.get("/creds")).status_code == 302
            ready = (await c.get("/readyz")).json()
            assert ready["status"] == "ready", ready
        info = await admin.jetstream().stream_info(topology.CLICKS)
        assert info.state.messages == 1
        # Nothing went to the spool: the click connection itself was let in.
        assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.log")) == 0
        await admin.drain()
    finally:
        server.stop()
    assert "violation" not in server.log_path.read_text().lower()


async def test_a_creds_file_that_is_not_one_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.creds"
    bad.write_text("not a creds file\n")
    with pytest.raises(ValueError, match="is not a NATS credentials file"):
        read_creds(str(bad))
