"""What a stranger or a weak key can cost the webhooks service (TypeScript):
every bound of its API attacked against the real service, on a real
nats-server (as the least-privilege NATS user ``webhooks``) and PostgreSQL.

One service for the module (its start is most of the cost); each test uses
keys of its own, so one test's rate limits are not another's. After every
test the service still answers and has logged no error, no stack trace and
no NATS permission violation."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from shared.http import keys
from shared.jetstream import bus, topology
from tests.conftest import reset_jetstream
from tests.harness import bearer, eventually
from tests.servers import Servers
from tests.webhooks.service import Running, SecuredNats, running, secured_nats

PROBLEM = "application/problem+json"
BODY_LIMIT = 64 * 1024  # api.ts
MAX_FILTER_ITEMS = 100  # api.ts
CAP = 4  # endpoints (LINKFLOW_WEBHOOKS_MAX_ENDPOINTS)
WRITE_RATE = 50  # per second and key, bursts of as many (the default)
ENV = {
    "LINKFLOW_WEBHOOKS_MAX_ENDPOINTS": str(CAP),
    "LINKFLOW_WEBHOOKS_WRITE_RATE": f"{WRITE_RATE}/s",
    # Bursts of 50 failures, then one a second.
    "LINKFLOW_AUTH_FAILURE_RATE": "1/s",
    "LINKFLOW_LOG_LEVEL": "info",
}
# Every key a test uses, made before the service starts (its readiness
# waits for them), so that no test polls for a key with failed attempts.
KEYS = {
    "wh-writer": (keys.WEBHOOKS,),
    "wh-cap": (keys.WEBHOOKS,),
    "wh-rate": (keys.WEBHOOKS,),
    "wh-other": (keys.WEBHOOKS,),
    "wh-flood": (keys.WEBHOOKS,),
    "wh-usage": (keys.WEBHOOKS,),
    "wh-unused": (keys.WEBHOOKS,),
    "wh-admin": (keys.ADMIN,),
    "wh-links-read": (keys.LINKS_READ,),
    "wh-links-write": (keys.LINKS_WRITE,),
    "wh-stats": (keys.STATS_READ, keys.OPS),
}
HOOK = "https://hooks.example.com/linkflow"


@dataclass
class Webhooks:
    service: Running
    nats: SecuredNats
    nc: Client
    keys: dict[str, str]

    def client(self, key: str | None = None, source: str = "127.0.0.1") -> httpx.AsyncClient:
        """A client of the API with ``key`` (a name in KEYS), from ``source``."""
        transport = httpx.AsyncHTTPTransport(local_address=source)
        headers = bearer(self.keys[key]) if key else {}
        return httpx.AsyncClient(
            base_url=self.service.base, headers=headers, transport=transport, timeout=10
        )


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="linkflow-test-webhooks-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def webhooks(session_servers: Servers, home: Path) -> AsyncIterator[Webhooks]:
    name = f"wh_{uuid.uuid4().hex[:12]}"
    admin_db = await asyncpg.connect(session_servers.pg_url("postgres"))
    try:
        await admin_db.execute(f'CREATE DATABASE "{name}"')
        with secured_nats(home) as nats:
            nc = await bus.connect(nats.admin_url, "tests", forever=False)
            try:
                await reset_jetstream(nc)  # streams and buckets as `linkflow migrate` makes them
                made = {k: await keys.create(nc.jetstream(), k, s) for k, s in KEYS.items()}
                env = {
                    **ENV,
                    "LINKFLOW_NATS_URL": nats.webhooks_url,
                    "LINKFLOW_WEBHOOKS_DATABASE_URL": session_servers.pg_url(name),
                }
                with running(home, env) as service:
                    yield Webhooks(service, nats, nc, made)
            finally:
                await nc.drain()
    finally:
        await admin_db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_db.close()


@pytest.fixture(autouse=True)
async def unharmed(webhooks: Webhooks) -> AsyncIterator[None]:
    """After each test: alive, ready, and nothing but ordinary log lines."""
    yield
    async with webhooks.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200
    assert webhooks.service.proc.poll() is None
    for line in webhooks.service.lines():
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"not a log line (a stack trace?): {line}")
        assert entry["level"] in ("debug", "info", "warning"), line
    assert not webhooks.nats.violations()


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """``r`` is an application/problem+json answer of ``status``; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].split(";")[0] == PROBLEM, r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://linkflow.dev/problems/"), body
    assert body["title"], body
    assert body["detail"], body
    return body


def refused(r: httpx.Response, field: str) -> dict[str, Any]:
    """A 422 naming ``field`` (and only it)."""
    body = problem(r, 422)
    assert [e["field"] for e in body["errors"]] == [field], body
    return body


# ---------------------------------------------------------------------------
# Who may call at all

ROUTES = [
    ("GET", "/api/webhooks"),
    ("POST", "/api/webhooks"),
    ("GET", "/api/webhooks/ep_x"),
    ("PATCH", "/api/webhooks/ep_x"),
    ("DELETE", "/api/webhooks/ep_x"),
    ("POST", "/api/webhooks/ep_x/secret"),
    ("POST", "/api/webhooks/ep_x/test"),
    ("GET", "/api/webhooks/ep_x/deliveries"),
    ("GET", "/api/webhooks/ep_x/deliveries/msg_x"),
    ("POST", "/api/webhooks/ep_x/deliveries/msg_x/retry"),
]


async def test_no_key_or_a_wrong_one_is_401_with_a_bearer_challenge(webhooks: Webhooks) -> None:
    # From an address of its own: its 40 failures stay within the burst of 50.
    async with webhooks.client(source="127.0.0.3") as c:
        for authorization in (None, "Bearer lf_nope", "Basic d2g6d2g=", "lf_x"):
            headers = {"authorization": authorization} if authorization else {}
            for method, path in ROUTES:
                r = await c.request(method, path, headers=headers, json={"url": HOOK})
                problem(r, 401)
                assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)


async def test_a_key_without_the_scope_is_403_naming_it(webhooks: Webhooks) -> None:
    for weak in ("wh-links-read", "wh-links-write", "wh-stats"):
        async with webhooks.client(weak, source="127.0.0.4") as c:
            for method, path in ROUTES:
                r = await c.request(method, path, json={"url": HOOK, "events": ["link.created"]})
                assert "'webhooks'" in problem(r, 403)["detail"], (weak, method, path)
                assert "www-authenticate" not in r.headers
    # Nothing was made by them.
    async with webhooks.client("wh-admin") as c:
        assert (await c.get("/api/webhooks")).json() == {"items": []}


# ---------------------------------------------------------------------------
# What one call may carry


async def test_bodies_over_64_kib_are_413_however_they_are_sent(webhooks: Webhooks) -> None:
    over = b'{"url": "' + b"a" * BODY_LIMIT + b'"}'
    async with webhooks.client("wh-writer") as c:
        json_type = {"content-type": "application/json"}
        for method, path in (("POST", "/api/webhooks"), ("PATCH", "/api/webhooks/ep_x")):
            r = await c.request(method, path, content=over, headers=json_type)
            problem(r, 413)

        # Ten megabytes declared and none sent: refused on the header, not waited for.
        (answer,) = await _raw(webhooks, f"content-length: {10 << 20}")
        too_large(answer)
        # Chunked, no length declared: cut off past the limit.
        chunk = b"1000\r\n" + b" " * 0x1000 + b"\r\n"
        (answer,) = await _raw(webhooks, "transfer-encoding: chunked", chunk * 17 + b"0\r\n\r\n")
        too_large(answer)

        # At the limit exactly, the body is read and judged on its fields.
        head = {"url": HOOK, "events": ["link.created"], "description": ""}
        pad = BODY_LIMIT - len(json.dumps(head).encode())
        at_limit = json.dumps({**head, "description": "d" * pad}).encode()
        assert len(at_limit) == BODY_LIMIT
        refused(await c.post("/api/webhooks", content=at_limit, headers=json_type), "description")


async def _raw(
    webhooks: Webhooks, framing: str, body: bytes = b"", key: str = "wh-writer", n: int = 1
) -> list[tuple[bytes, bytes]]:
    """``n`` POSTs, each on a connection of its own, with ``framing`` (its
    content-length or transfer-encoding header) and ``body`` written as
    they are, all at once once every connection is open; each answer's
    head and body."""
    port = int(webhooks.service.base.rsplit(":", 1)[1])
    request = (
        f"POST /api/webhooks HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {webhooks.keys[key]}\r\n"
        f"content-type: application/json\r\n{framing}\r\n\r\n".encode()
        + body
    )
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]

    async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        size = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await asyncio.wait_for(reader.readexactly(size), 10)

    try:
        for _, writer in conns:
            writer.write(request)
        return await asyncio.gather(*(answer(reader) for reader, _ in conns))
    finally:
        for _, writer in conns:
            writer.close()


def too_large(answer: tuple[bytes, bytes]) -> None:
    head, body = answer
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"content-type: application/problem+json" in head.lower(), head
    assert json.loads(body)["status"] == 413


@pytest.mark.parametrize(
    ("field", "item"),
    [("codes", "code{:03d}"), ("tags", "tag {}"), ("domains", "d{}.example")],
)
async def test_filters_hold_at_most_100_items(webhooks: Webhooks, field: str, item: str) -> None:
    many = [item.format(i) for i in range(MAX_FILTER_ITEMS + 1)]
    async with webhooks.client("wh-writer") as c:
        new = {"url": HOOK, "events": ["link.created"]}
        refused(await c.post("/api/webhooks", json={**new, field: many}), field)
        r = await c.post("/api/webhooks", json={**new, field: many[:MAX_FILTER_ITEMS]})
        assert r.status_code == 201, r.text
        endpoint = r.json()
        assert len(endpoint[field]) == MAX_FILTER_ITEMS
        try:
            refused(await c.patch(f"/api/webhooks/{endpoint['id']}", json={field: many}), field)
            # Duplicates do not pass as fewer items.
            same = [many[0]] * 2
            refused(await c.patch(f"/api/webhooks/{endpoint['id']}", json={field: same}), field)
        finally:
            assert (await c.delete(f"/api/webhooks/{endpoint['id']}")).status_code == 204


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tags", ["t" * 101]),
        ("domains", ["d" * 254]),
        ("codes", ["a/b"]),
        ("description", "d" * 1001),
        ("events", ["link.created"] * 5),
        ("events", []),
    ],
)
async def test_every_item_is_bounded_too(webhooks: Webhooks, field: str, value: Any) -> None:
    async with webhooks.client("wh-writer") as c:
        body = {"url": HOOK, "events": ["link.created"], field: value}
        errors = problem(await c.post("/api/webhooks", json=body), 422)["errors"]
        assert {e["field"].split("[")[0] for e in errors} == {field}, errors


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",  # plain HTTP
        "ftp://hooks.example.com/",
        "javascript:alert(1)",
        "https://user:secret@hooks.example.com/",
        "https://localhost/",
        "https://api.localhost/",
        "https://127.0.0.1/",
        "https://2130706433/",  # 127.0.0.1 as one number
        "https://0x7f.1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://192.168.1.1/",
        "https://[fd00::1]/",
        "https://0.0.0.0/",
        "https://hooks.example.com/" + "a" * 2048,
        "not a url",
    ],
)
async def test_urls_that_reach_inside_or_are_not_https_are_refused(
    webhooks: Webhooks, url: str
) -> None:
    async with webhooks.client("wh-writer") as c:
        refused(await c.post("/api/webhooks", json={"url": url, "events": ["link.created"]}), "url")


async def test_endpoints_past_the_cap_are_refused_even_when_asked_for_at_once(
    webhooks: Webhooks,
) -> None:
    async with webhooks.client("wh-cap") as c:
        held = len((await c.get("/api/webhooks")).json()["items"])
        # More creations than the cap allows, all at once (within the key's burst).
        new = {"url": HOOK, "events": ["link.created"]}
        body = json.dumps(new).encode()
        answers = await _raw(webhooks, f"content-length: {len(body)}", body, "wh-cap", n=40)
        statuses = Counter(int(head.split(b" ")[1]) for head, _ in answers)
        assert statuses == {201: CAP - held, 422: 40 - CAP + held}, statuses
        made = [json.loads(body)["id"] for head, body in answers if b" 201 " in head]
        for head, body in answers:
            if b" 422 " in head:
                assert f"at most {CAP} endpoints" in json.loads(body)["detail"]
        assert len((await c.get("/api/webhooks")).json()["items"]) == CAP
        refused(await c.post("/api/webhooks", json=new), "body")
        # A deletion makes room again.
        for endpoint in made:
            assert (await c.delete(f"/api/webhooks/{endpoint}")).status_code == 204
        r = await c.post("/api/webhooks", json=new)
        assert r.status_code == 201, r.text
        assert (await c.delete(f"/api/webhooks/{r.json()['id']}")).status_code == 204


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_delivery_pages_are_bounded_and_cursors_checked(webhooks: Webhooks) -> None:
    async with webhooks.client("wh-writer") as c:
        page = "/api/webhooks/ep_none/deliveries"
        # Checked before anything is looked up: no such endpoint, still 422.
        for limit in ("0", "101", "1000", "99999999999", "-1", "1e2", "ten", ""):
            refused(await c.get(page, params={"limit": limit}), "limit")
        for cursor in (
            "garbage!",
            "x" * 5000,
            _cursor(["1", "x" * 65]),  # an id longer than any
            _cursor(["-1", "msg_x"]),
            _cursor(["1" * 21, "msg_x"]),  # past 64 bits
            _cursor({"us": "1", "id": "msg_x"}),
            base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
        ):
            refused(await c.get(page, params={"cursor": cursor}), "cursor")
        refused(await c.get(page, params={"status": "anything"}), "status")
        # Within the bounds, the query reaches the endpoint's lookup.
        problem(await c.get(page, params={"limit": "100", "cursor": _cursor(["1", "m"])}), 404)


# ---------------------------------------------------------------------------
# How often


async def test_writes_past_the_keys_rate_are_429_and_reads_and_other_keys_go_on(
    webhooks: Webhooks,
) -> None:
    async with webhooks.client("wh-rate") as c:
        answers = await asyncio.gather(
            *(c.delete("/api/webhooks/ep_none") for _ in range(WRITE_RATE * 3))
        )
        statuses = Counter(r.status_code for r in answers)
        assert statuses[429] >= WRITE_RATE, statuses
        assert set(statuses) == {404, 429}, statuses
        for r in answers:
            if r.status_code == 429:
                assert "writes" in problem(r, 429)["detail"]
                assert int(r.headers["retry-after"]) >= 1
        # Reads are not writes.
        assert (await c.get("/api/webhooks")).status_code == 200
    async with webhooks.client("wh-other") as other:
        problem(await other.delete("/api/webhooks/ep_none"), 404)


async def test_a_flood_of_bad_keys_is_429_for_its_address_alone(webhooks: Webhooks) -> None:
    """Failed authentications from 127.0.0.2; the tests' own address and a
    good key from the flooding one are still answered."""
    async with webhooks.client(source="127.0.0.2") as flood:
        statuses: Counter[int] = Counter()
        started = time.monotonic()
        for i in range(80):
            r = await flood.get("/api/webhooks", headers=bearer(f"lf_guess{i:04d}"))
            statuses[r.status_code] += 1
            if r.status_code == 429:
                assert "failed authentications" in problem(r, 429)["detail"]
                assert int(r.headers["retry-after"]) >= 1
        took = time.monotonic() - started
        assert took < 10
        # The burst of 50, and the one a second that came back meanwhile.
        assert 50 <= statuses[401] <= 51 + took, (statuses, took)
        assert statuses[401] + statuses[429] == 80, statuses
        # No key at all is a failure as well.
        problem(await flood.get("/api/webhooks"), 429)
        problem(await flood.post("/api/webhooks", json={"url": HOOK}), 429)
        # A good key from the same address is answered.
        good = bearer(webhooks.keys["wh-flood"])
        assert (await flood.get("/api/webhooks", headers=good)).status_code == 200
    async with webhooks.client() as mine:
        problem(await mine.get("/api/webhooks", headers=bearer("lf_guess")), 401)


# ---------------------------------------------------------------------------
# Last use of a key (shared.http.keys.KeyRing's, written by this service too)


async def test_a_keys_use_is_noted_in_api_key_usage_at_most_once_a_minute(
    webhooks: Webhooks,
) -> None:
    usage = await webhooks.nc.jetstream().key_value(topology.KV_USAGE)
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with webhooks.client("wh-usage") as c:
        assert (await c.get("/api/webhooks")).status_code == 200

        async def noted() -> Any:
            try:
                return await usage.get("wh-usage")
            except KeyNotFoundError:
                return None

        entry = await eventually(noted, 5, "the key's use in api_key_usage")
        at = datetime.fromisoformat(entry.value.decode())
        assert before <= at <= datetime.now(UTC) + timedelta(seconds=1), at
        # `linkflow keys list` reads it.
        listed = {record.name: last for record, last in await keys.list_(webhooks.nc.jetstream())}
        assert listed["wh-usage"] == at
        assert listed["wh-unused"] is None
        # More calls within the minute write nothing more.
        for _ in range(5):
            assert (await c.get("/api/webhooks")).status_code == 200
        # wait-ok: an absence (no second write) has no condition to wait on.
        await asyncio.sleep(0.3)
        assert (await usage.get("wh-usage")).revision == entry.revision
    # A refused key is no use.
    async with webhooks.client("wh-links-read") as weak:
        problem(await weak.get("/api/webhooks"), 403)
    await asyncio.sleep(0.3)  # wait-ok: an absence, as above
    with pytest.raises(KeyNotFoundError):
        await usage.get("wh-links-read")
