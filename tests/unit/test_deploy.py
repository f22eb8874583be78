"""compose.yaml and the Prometheus config agree with the services' settings."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from shared import roster

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tuple(s.name for s in roster.ALL)


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_every_service_runs_as_its_own_container() -> None:
    services = load("compose.yaml")["services"]
    for package in PACKAGES:
        name = package.replace("_", "-")
        assert services[name]["command"] == ["python", "-m", f"services.{package}"]


def test_prometheus_scrapes_each_service_on_its_default_port() -> None:
    compose = load("compose.yaml")["services"]
    targets = {
        target
        for job in load("deploy/prometheus/prometheus.yml")["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    for target in targets:
        assert target.split(":")[0] in compose, f"{target} is no compose service"
    for package in PACKAGES:
        settings = importlib.import_module(f"services.{package}.settings").Settings()
        assert f"{package.replace('_', '-')}:{settings.port}" in targets


def test_compose_mounts_only_files_that_exist() -> None:
    for name, service in load("compose.yaml")["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_the_dashboard_reads_only_metrics_linkflow_exports() -> None:
    """Every metric a panel queries is one a linkflow process registers (or
    Prometheus' own ``up``): a renamed metric fails here, not on a blank panel."""
    import json
    import re

    from prometheus_client import REGISTRY

    import services.link.redirect  # noqa: F401  (registers the hot path's metrics)
    from shared import metrics  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    known = {"up"}
    for family in REGISTRY.collect():
        known |= {family.name, *(family.name + s for s in suffixes.get(family.type, ()))}
    dashboard = json.loads((ROOT / "deploy/grafana/linkflow.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"\b(linkflow_[a-z_]+|up)\b", expr):
            assert name in known, f"{name} in {expr!r} is not exported"
