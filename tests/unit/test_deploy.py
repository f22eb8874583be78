"""compose.yaml and the Prometheus config agree with the services' settings."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("link", "click_recorder", "analytics", "cache_refresher")


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
        for job in load("deploy/prometheus.yml")["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    for target in targets:
        assert target.split(":")[0] in compose, f"{target} is no compose service"
    for package in PACKAGES:
        settings = importlib.import_module(f"services.{package}.settings").Settings()
        assert f"{package.replace('_', '-')}:{settings.port}" in targets
