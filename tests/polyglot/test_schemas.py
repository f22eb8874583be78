"""The JSON Schemas of shared/schemas/ and the AsyncAPI document read as
another language would: each file a valid, self-contained JSON Schema
2020-12 that ajv (Node) and jsonschema (Python) both compile; what the
running services really send on every subject, and keep in KV, accepted by
both; messages with a wrong type or a missing field refused by both; and
@asyncapi/parser reading shared/asyncapi.yaml without an error, each
message's payload resolving to its schema file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from shared import db
from shared.cli.generate import ASYNCAPI
from shared.contracts import (
    SUBJECTS,
    Click,
    LinkCreated,
    LinkDeleted,
    LinkEntry,
    LinkRefresh,
    LinkRefreshed,
    LinkUpdated,
    OrphanVisits,
    RedirectsBusy,
    Rule,
    VisitCount,
    When,
    click_id,
    encode,
    now,
)
from shared.http import keys
from shared.http.keys import ApiKey
from shared.jetstream import dlq, topology
from tests import node
from tests.harness import eventually, running
from tests.integration.conftest import CacheRefresher
from tests.polyglot.jsonschemas import FILES, ajv, inlined, load, pointed, python_verdict, refs

pytestmark = pytest.mark.polyglot

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
# What the AsyncAPI document must say the payloads are: what the files are.
JSON_SCHEMA_2020_12 = "application/schema+json;version=2020-12"
# The kinds of KV value, beside the subjects' payloads.
KV_VALUES = {topology.KV_LINKS: LinkEntry, topology.KV_VISITS: VisitCount, topology.KV_KEYS: ApiKey}
# Enough of one subject's messages (the busy gateway sends clicks by the hundred).
KEEP = 200


def test_every_file_is_json_schema_2020_12() -> None:
    assert len(FILES) == len({s for s, _, _ in SUBJECTS.values()}) + len(KV_VALUES)
    for name in FILES:
        schema = load(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_ref_resolves_inside_its_file() -> None:
    """Today's fault: ``#/$defs/Rule`` with no ``$defs``. Each file carries
    exactly the definitions it reaches, so a reader needs no other file."""
    for name in FILES:
        schema = load(name)
        reached: set[str] = set()
        todo = list(refs({k: v for k, v in schema.items() if k != "$defs"}))
        while todo:
            ref = todo.pop()
            try:
                target = pointed(schema, ref)
            except KeyError:
                raise AssertionError(f"{name}: {ref} resolves to nothing in the file") from None
            if ref not in reached:
                reached.add(ref)
                todo.extend(refs(target))
        defined = {f"#/$defs/{d}" for d in schema.get("$defs", {})}
        assert reached == defined, f"{name}: $defs {sorted(defined)}, reached {sorted(reached)}"


def test_ajv_compiles_every_file_in_strict_mode() -> None:
    compiled, _ = ajv([])
    assert compiled == dict.fromkeys(FILES), compiled


def _examples() -> dict[str, dict[str, Any]]:
    """One valid message per schema, as the services encode them."""
    t = now()
    rule = Rule(when=When(device=["mobile"], query={"a": "b"}, after=t), url="https://m.example/")
    structs: list[msgspec.Struct] = [
        Click(id=click_id(), code="abc", ts=t, country="DE", rule=0, visitor="0" * 32),
        LinkCreated(code="abc", url="https://e.example/", created_at=t, tags=["t"]),
        LinkUpdated(
            code="abc",
            url="https://e.example/",
            redirect_type=302,
            expires_at=None,
            tags=[],
            version=2,
            updated_at=t,
            rules=[rule],
            created_at=t,
        ),
        LinkDeleted(code="abc", version=3, deleted_at=t),
        LinkEntry(url="https://e.example/", rules=[rule], max_visits=5, created_at=t),
        LinkRefresh(code="abc"),
        LinkRefreshed(code="abc", version=2),
        RedirectsBusy(gateway="gw:8000", load=0.93, hold=1.0),
        OrphanVisits(domain=None, kind="not_found", path="/gone", count=3, from_=t, to=t),
        VisitCount(since=t, visits=2),
    ]
    found = {f"{type(s).__name__}.json": json.loads(encode(s)) for s in structs}
    # An API key's record, as `linkflow keys` stores it (its own encoder).
    _, record = keys.new_key("reporting", (keys.STATS_READ,), expires_at=t)
    found["ApiKey.json"] = json.loads(keys.encode(record))
    return found


def _wrong_value(prop: dict[str, Any]) -> Any:
    """A value of a type ``prop`` does not allow."""
    types = {o.get("type", "object" if "$ref" in o else None) for o in prop.get("anyOf", [prop])}
    assert None not in types, f"no type to contradict in {prop}"
    return 7 if "object" in types else {"wrong": True}


def _refusable(name: str, good: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Messages the schema must refuse: each required field missing, each
    field of a wrong type, each time without a zone, and a rule broken
    inside ``$defs``."""
    schema = load(name)
    bad = [(f"no {f}", {k: v for k, v in good.items() if k != f}) for f in schema["required"]]
    for field, prop in schema["properties"].items():
        bad.append((f"{field} of a wrong type", {**good, field: _wrong_value(prop)}))
        if "date-time" in {o.get("format") for o in prop.get("anyOf", [prop])}:
            bad.append((f"{field} without a zone", {**good, field: "2026-01-02T03:04:05"}))
    if "rules" in good:
        bad.append(("a rule without when", {**good, "rules": [{"url": "https://m.example/"}]}))
        wrong = {"when": {"device": "mobile"}, "url": "https://m.example/"}
        bad.append(("a condition of a wrong type", {**good, "rules": [wrong]}))
    return bad


def test_wrong_types_and_missing_fields_are_refused_by_both() -> None:
    examples = _examples()
    assert sorted(examples) == FILES
    cases = [(name, "valid", good) for name, good in examples.items()]
    for name, good in examples.items():
        cases += [(name, what, msg) for what, msg in _refusable(name, good)]
    _, verdicts = ajv([(name, msg) for name, _, msg in cases])
    wrong = []
    for (name, what, msg), verdict in zip(cases, verdicts, strict=True):
        should = what == "valid"
        py_errors = python_verdict(load(name), msg)
        if (not py_errors) != should or verdict["valid"] is not should:
            wrong.append((name, what, py_errors, verdict))
    assert wrong == []
    # Each schema had a missing field and a wrong type to refuse, at least.
    assert all(sum(c[0] == name for c in cases) >= 3 for name in FILES)


def test_jsonschema_checks_date_time() -> None:
    """Without rfc3339-validator, jsonschema's FormatChecker passes any date-time."""
    assert "date-time" in jsonschema.FormatChecker().checkers


@contextlib.asynccontextmanager
async def capturing(nc: Client) -> AsyncIterator[dict[str, list[Msg]]]:
    """Every message on the contract's subjects, by subject template, while
    the block runs (core NATS sees what is published to a stream too)."""
    seen: dict[str, list[Msg]] = {template: [] for template in SUBJECTS}

    def keeper(template: str) -> Callable[[Msg], Awaitable[None]]:
        async def keep(msg: Msg) -> None:
            if (msg.headers or {}).get("Linkflow-Test") != "poison":
                seen[template].append(msg)

        return keep

    subs = [
        await nc.subscribe(re.sub(r"\{\w+\}", "*", template), cb=keeper(template))
        for template in SUBJECTS
    ]
    await nc.flush()
    try:
        yield seen
    finally:
        for sub in subs:
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def refresh_responder(nc: Client, db_url: str) -> AsyncIterator[None]:
    """The cache-refresher's answer to refresh requests (its own loop, which
    the ``cache_refresher`` fixture leaves out)."""
    from services.cache_refresher import refresh

    pool = await db.create_pool(db_url, max_size=2)
    kv = await nc.jetstream().key_value(topology.KV_LINKS)
    try:
        async with running(refresh.responder(nc, kv, pool)):
            yield
    finally:
        await pool.close()


async def kv_value(nc: Client, bucket: str, key: str) -> dict[str, Any] | None:
    kv = await nc.jetstream().key_value(bucket)
    with contextlib.suppress(KeyNotFoundError):
        entry = await kv.get(key)
        if entry.value:
            value: dict[str, Any] = json.loads(entry.value)
            return value
    return None


async def produce_everything(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, nc: Client, db_url: str
) -> list[tuple[str, dict[str, Any]]]:
    """Make the services send a message on every subject and write both
    kinds of KV value; returns the KV values as (schema file, value)."""
    for code, extra in (("plain", {"tags": ["a"]}), ("limited", {"max_visits": 5}), ("gone", {})):
        r = await gateway.post(
            "/api/links", json={"url": "https://e.example/", "code": code, **extra}
        )
        assert r.status_code == 201, r.text
    # A rule's time goes out as it was given, microseconds and all (the
    # schema's $defs say so; the payload's own times are cut to milliseconds).
    after = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=123456)
    rules = [
        {
            "when": {
                "device": ["mobile"],
                "query": {"a": "b"},
                "after": after.isoformat().replace("+00:00", "Z"),
            },
            "url": "https://m.example/",
        }
    ]
    r = await gateway.patch(
        "/api/links/plain", json={"rules": rules, "expires_at": "2099-01-01T00:00:00Z"}
    )
    assert r.status_code == 200, r.text
    assert (await gateway.delete("/api/links/gone")).status_code == 204
    # A click by the rule, and a counted visit (a person's browser).
    assert (await gateway.get("/plain?a=b", headers={"user-agent": IPHONE})).status_code == 302
    assert (await gateway.get("/limited", headers={"user-agent": CHROME})).status_code == 302
    # An orphan visit (visits.orphan, sent within a second).
    assert (await gateway.get("/no-such-link")).status_code == 404

    async def kv_written() -> list[tuple[str, dict[str, Any]]] | None:
        plain = await kv_value(nc, topology.KV_LINKS, "plain")
        gone = await kv_value(nc, topology.KV_LINKS, "gone")
        visits = await kv_value(nc, topology.KV_VISITS, "limited")
        key = await kv_value(nc, topology.KV_KEYS, "admin")  # the test's key
        if not (plain and plain.get("rules") and gone and gone.get("deleted") and visits and key):
            return None
        return [
            ("LinkEntry.json", plain),
            ("LinkEntry.json", gone),
            ("VisitCount.json", visits),
            ("ApiKey.json", key),
        ]

    values: list[tuple[str, dict[str, Any]]] = await eventually(kv_written, 20, "KV entries")

    # A links.* dead letter, replayed: an event the cache-refresher cannot
    # decode (version 0) is dead-lettered by it; analytics' replay asks the
    # cache-refresher (LinkRefresh), which answers (LinkRefreshed).
    await nc.jetstream().publish(
        "links.updated", b'{"code":"plain","version":0}', headers={"Linkflow-Test": "poison"}
    )
    letters = await eventually(
        lambda: dlq.list_(nc.jetstream(), topology.CACHE_REFRESHER.name), what="a dead letter"
    )
    async with refresh_responder(nc, db_url):

        async def replayed() -> bool:
            r = await analytics.post(f"/api/dlq/{letters[0].seq}/replay")
            assert r.status_code in (200, 503), r.text  # 503: not subscribed yet
            return r.status_code == 200

        await eventually(replayed, what="the dead letter replayed")
    return values


async def load_the_gateway(gateway: httpx.AsyncClient, seen: dict[str, list[Msg]]) -> None:
    """Redirects at once until the gateway says redirects.busy: its load is
    its event loop's share of a CPU, and this test's loop is its loop."""

    async def busy() -> bool:
        await asyncio.gather(*(gateway.get("/plain") for _ in range(50)))
        return bool(seen["redirects.busy"])

    await eventually(busy, 30, "redirects.busy from a loaded gateway")


async def test_what_the_services_send_is_accepted_by_both(
    gateway: httpx.AsyncClient,
    analytics: httpx.AsyncClient,
    recorder: None,
    cache_refresher: CacheRefresher,
    nc: Client,
    db_url: str,
) -> None:
    """Every subject and KV value, captured from the running services (a
    links.updated with rules, a tombstone among the KV entries)."""
    async with capturing(nc) as seen:
        kv_values = await produce_everything(gateway, analytics, nc, db_url)
        await load_the_gateway(gateway, seen)

        async def every_subject() -> bool:
            return all(seen.values())

        await eventually(every_subject, what="a message on every subject")
    cases = list(kv_values)
    for template, msgs in seen.items():
        name = f"{SUBJECTS[template][0].__name__}.json"
        cases += [(name, json.loads(m.data)) for m in msgs[:KEEP]]
    assert {name for name, _ in cases} == set(FILES)
    assert any(m.get("rules") for name, m in cases if name == "LinkUpdated.json")
    assert any(m.get("rule") == 0 for name, m in cases if name == "Click.json")
    _, verdicts = ajv(cases)
    refused = [
        (name, msg, errors, verdict)
        for (name, msg), verdict in zip(cases, verdicts, strict=True)
        if (errors := python_verdict(load(name), msg)) or verdict["valid"] is not True
    ]
    assert refused == []


def _without_parser_marks(node_: Any) -> Any:
    if isinstance(node_, dict):
        return {
            k: _without_parser_marks(v) for k, v in node_.items() if not k.startswith("x-parser-")
        }
    if isinstance(node_, list):
        return [_without_parser_marks(v) for v in node_]
    return node_


def test_the_asyncapi_parser_reads_the_document_and_its_payloads() -> None:
    done = node.run("asyncapi.mjs", str(ASYNCAPI))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    errors = [d for d in out["diagnostics"] if d["severity"] == 0]
    assert errors == []
    messages = out["messages"]
    assert sorted(messages) == sorted(s.__name__ for s, _, _ in SUBJECTS.values())
    for name, parsed in messages.items():
        schema = load(f"{name}.json")
        assert parsed["schemaFormat"] == JSON_SCHEMA_2020_12
        # The parser hands the payload on dereferenced: equal to the file
        # with its own $refs followed.
        assert _without_parser_marks(parsed["payload"]) == inlined(schema, schema), name
