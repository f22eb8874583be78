"""The OpenAPI documents tell the truth: schemathesis generates requests
from each service's document and finds no answer the document does not
describe (status, media type, body schema) and no server error."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from services.link.app import build as build_gateway
from services.link.settings import Settings as LinkSettings
from shared import db
from shared.http import keys
from shared.settings import Common
from tests.conftest import TEST_WORKER
from tests.harness import serve
from tests.servers import Servers

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


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
        "examples,coverage,fuzzing",
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
            LinkSettings(common=common, spool_dir=str(tmp_path / "spool"), write_rate="100000/s")
        )
    else:
        await db.migrate(db_url, ANALYTICS.sql)
        app = build_analytics(
            AnalyticsSettings(common=common, worker=TEST_WORKER, write_rate="100000/s")
        )
    async with serve(app) as base:
        async with httpx.AsyncClient() as c:
            doc = (await c.get(f"{base}/api/openapi.json")).json()
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
