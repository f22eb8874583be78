"""A real Prometheus (Debian's package; `just prometheus` installs it)
scraping every service of a running `linkflow up`, with linkflow's alert
rules loaded and every expression of the Grafana dashboard evaluated."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared import roster
from shared.cli.process import Process
from shared.cli.servers import free_port, port_open, wait_until
from shared.cli.supervisor import Supervisor
from tests.e2e.conftest import gateway_url, ready
from tests.e2e.test_webhooks import LOCAL, Receiver, receiving, subscribe
from tests.harness import eventually, key_header

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="no prometheus/promtool: `just prometheus` installs Debian's package and runs these",
    ),
]


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    rules = ROOT / "deploy/prometheus"
    assert PROMTOOL is not None
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [PROMTOOL, *args], cwd=rules, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.fixture
def prometheus(linkflow: Supervisor, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping every service every second, with the alerts."""
    assert PROMETHEUS is not None
    targets = [f"127.0.0.1:{os.environ[f'LINKFLOW_{s.name.upper()}_PORT']}" for s in roster.ALL]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [{"job_name": "linkflow", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Process(tmp_path / "prometheus.log")
    proc.spawn(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
    )
    try:
        wait_until(lambda: port_open(port) or not proc.running, 30, "prometheus")
        assert proc.running, (tmp_path / "prometheus.log").read_text()[-2000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def query(prom: str, expr: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{prom}/api/v1/query", params={"query": expr})
    body = r.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def value(prom: str, expr: str) -> float:
    result = await query(prom, expr)
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_prometheus_scrapes_linkflow_up(linkflow: Supervisor, prometheus: str) -> None:
    url = gateway_url()
    await eventually(lambda: ready(url), 30, "gateway ready")

    async def all_up() -> bool:
        result = await query(prometheus, 'up{job="linkflow"}')
        return len(result) == len(roster.ALL) and all(r["value"][1] == "1" for r in result)

    await eventually(all_up, 30, "every service up in Prometheus")
    # A webhook endpoint taking every click: the webhooks panels have data.
    with receiving(Receiver()) as receiver:
        await subscribe(linkflow, receiver, ["link.clicked"])
        await redirect_and_check(linkflow, prometheus, url)


async def redirect_and_check(linkflow: Supervisor, prometheus: str, url: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers=key_header(linkflow.home)) as client:
        r = await client.post("/api/links", json={"url": "https://example.com", "code": "prom"})
        assert r.status_code == 201
        statuses = await asyncio.gather(*(client.get("/prom") for _ in range(200)))
    assert [s.status_code for s in statuses] == [302] * 200

    async def counted(expr: str, at_least: float) -> bool:
        return await value(prometheus, expr) >= at_least

    for expr in (
        'sum(linkflow_webhook_deliveries_total{outcome="delivered"})',
        'sum(linkflow_redirects_total{status="302"})',
        "sum(linkflow_redirect_seconds_count)",
        'sum(linkflow_worker_messages_total{consumer="click-recorder",outcome="ack"})',
        'sum(linkflow_worker_messages_total{consumer="analytics",outcome="ack"})',
    ):
        await eventually(lambda e=expr: counted(e, 200), 30, f"{expr} >= 200")
    # The pipeline as analytics exports it: every consumer's backlog and lag,
    # the DLQ's depth, the backfills.
    for metric in (
        "linkflow_consumer_pending",
        "linkflow_consumer_ack_pending",
        "linkflow_consumer_lag_seconds",
        "linkflow_dlq_depth",
    ):

        async def present(m: str = metric) -> bool:
            consumers = {r["metric"]["consumer"] for r in await query(prometheus, m)}
            return {"click-recorder", "analytics", "cache-refresher"} <= consumers

        await eventually(present, 30, f"{metric} for every consumer")
    assert await query(prometheus, "linkflow_backfill_remaining")
    # Caught up: no lag, nothing dead-lettered, nothing spooled.
    assert await value(prometheus, "max(linkflow_dlq_depth)") == 0
    assert await value(prometheus, "sum(linkflow_spool_records)") == 0

    async with httpx.AsyncClient() as c:
        groups = (await c.get(f"{prometheus}/api/v1/rules")).json()["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {
        "LinkflowServiceDown",
        "LinkflowConsumerLagGrowing",
        "LinkflowDeadLetters",
        "LinkflowSpoolNotEmpty",
        "LinkflowRedirectSlow",
        "LinkflowRecorderFailing",
        "LinkflowWebhookEndpointFailing",
        "LinkflowWebhookDeliveryStale",
    }
    assert all(r["health"] == "ok" for r in rules.values()), rules

    # Every expression of the dashboard evaluates, with data.
    dashboard = json.loads((ROOT / "deploy/grafana/linkflow.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for expr in exprs:

        async def has_data(e: str = expr) -> bool:
            return bool(await query(prometheus, e))

        await eventually(has_data, 30, f"data for {expr}")
