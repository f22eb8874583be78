"""The OpenAPI documents tell the truth and the whole truth: each is valid
OpenAPI 3.1, types every body it takes and gives with an example, and
schemathesis, generating requests from it (and following its links from a
created link to the calls that read it), finds no answer the document does
not describe (status, media type, body schema) and no server error."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from nats.aio.client import Client
from openapi_spec_validator import validate

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from services.link.app import build as build_gateway
from services.link.settings import Settings as LinkSettings
from shared import db
from shared.http import keys
from shared.settings import Common, Rate
from tests.conftest import TEST_WORKER
from tests.harness import serve
from tests.servers import Servers

pytestmark = pytest.mark.polyglot

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,ensure_resource_availability"
)


# Not use_after_free: a deleted link keeps its history ("where did it point
# on 3 March" has an answer), so that one read answers 200 after a delete by
# design, and the CLI's --checks overrides any per-operation setting.


async def schemathesis(base: str, key: str, tmp_path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {key}",
        "--max-examples",
        "50",
        "--seed",
        "20261129",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--request-timeout",
        "5",
        # The live stream never ends: each generated request would wait out
        # the timeout. Its document is checked below instead.
        "--exclude-path",
        "/api/stream/clicks",
        "--workers",
        "1",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.parametrize("service", ["gateway", "analytics"])
async def test_schemathesis_finds_nothing(
    service: str, servers: Servers, nc: Client, db_url: str, tmp_path: Path
) -> None:
    key = await keys.create(nc.jetstream(), "schemathesis", (keys.ADMIN,))
    common = Common(
        nats_url=servers.nats_url,
        database_url=db_url,
        analytics_database_url=db_url,
        public_url="http://sho.rt",
    )
    if service == "gateway":
        app = build_gateway(
            LinkSettings(common=common, spool_dir=str(tmp_path / "spool"), write_rate=Rate(100_000))
        )
    else:
        await db.migrate(db_url, ANALYTICS.sql)
        app = build_analytics(
            AnalyticsSettings(common=common, worker=TEST_WORKER, write_rate=Rate(100_000))
        )
    async with serve(app) as base:
        async with httpx.AsyncClient() as c:
            doc = (await c.get(f"{base}/api/openapi.json")).json()
        validate(doc)
        assert_typed(doc)
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                assert op["security"] == [{"bearer": [op["x-scope"]]}], (method, path)
                for status in ("401", "403", "429"):
                    content = op["responses"][status]["content"]
                    assert list(content) == ["application/problem+json"], (method, path)
                assert "HTTPValidationError" not in str(op), (method, path)
        if service == "analytics":
            sse = doc["paths"]["/api/stream/clicks"]["get"]["responses"]["200"]["content"]
            assert list(sse) == ["text/event-stream"]
        code, report = await schemathesis(base, key, tmp_path)
    assert code == 0, report
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases is not None, report
    assert int(cases.group(1)) == int(cases.group(2)) >= 200, report


def assert_typed(doc: dict[str, Any]) -> None:
    """Every answer and request body has a schema and an example that fits
    it: what a generated client needs to type it. A JSON body's schema is a
    declared type (a component), never the framework's empty one."""
    components = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            bodies = [(f"answer {status}", r) for status, r in op["responses"].items()]
            if "requestBody" in op:
                bodies.append(("request", op["requestBody"]))
            for what, described in bodies:
                where = (method, path, what)
                if what == "answer 204":
                    assert "content" not in described, where
                    continue
                assert described.get("content"), where
                for media, content in described["content"].items():
                    schema = content.get("schema")
                    assert schema, (*where, media)
                    if "json" not in media:
                        continue
                    assert set(schema) == {"$ref"}, (*where, media, schema)
                    assert "example" in content, (*where, media)
                    # The $ref resolves against this root, as in the document.
                    jsonschema.Draft202012Validator(
                        {"$ref": schema["$ref"], "components": {"schemas": components}},
                        format_checker=jsonschema.FormatChecker(),
                    ).validate(content["example"])
