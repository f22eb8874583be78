"""Imports point down: shared/ imports no service, no service imports
another or the `linkflow` command (shared.cli) or its benchmark lab
(shared.bench), and within shared/ the ground floor (contracts, settings,
db, ...) imports none of the role packages above it. What a service gives the
`linkflow` command goes through declared entry points (pyproject.toml)."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_shared_imports_no_service() -> None:
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "shared").rglob("*.py")
        for name in imported(path)
        if name == "services" or name.startswith("services.")
    }
    assert not found, sorted(found)


def test_no_service_imports_another() -> None:
    found = set()
    for service in (p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()):
        for path in service.rglob("*.py"):
            for name in imported(path):
                parts = name.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != service.name:
                    found.add(f"{path.relative_to(ROOT)} imports {name}")
    assert not found, sorted(found)


def test_services_do_not_import_the_command() -> None:
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "services").rglob("*.py")
        for name in imported(path)
        if name.split(".")[:2] in (["shared", "cli"], ["shared", "bench"])
    }
    assert not found, sorted(found)


# Which of shared/'s parts each part may import.
MAY_IMPORT = {
    "ground": {"ground"},
    "jetstream": {"ground", "jetstream"},
    "http": {"ground", "jetstream", "http"},
    # Running a service's process (shared/runner.py): its HTTP server and loops.
    "runner": {"ground", "jetstream", "http", "runner"},
    "cli": {"ground", "jetstream", "http", "cli"},
    "bench": {"ground", "jetstream", "http", "cli", "bench"},
}
# The one import upwards: `linkflow bench` loads the lab when it is asked for.
UPWARD = {("shared/cli/main.py", "bench")}


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in MAY_IMPORT else "ground"


def test_shared_parts_import_only_downwards() -> None:
    found = set()
    for path in (ROOT / "shared").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in imported(path):
            if (
                name.startswith("shared.")
                and part(name) not in MAY_IMPORT[part(module)]
                and (path.relative_to(ROOT).as_posix(), part(name)) not in UPWARD
            ):
                found.add(f"{path.relative_to(ROOT)} imports {name}")
    assert not found, sorted(found)


def test_the_declared_entries_load() -> None:
    migrations = {e.name: e.load() for e in entry_points(group="linkflow.migrations")}
    assert set(migrations) == {"analytics", "click_recorder", "link"}
    tables = {name: m.sql for name, m in migrations.items()}
    assert "CREATE TABLE IF NOT EXISTS links " in tables["link"]
    assert "CREATE TABLE IF NOT EXISTS clicks " in tables["click_recorder"]
    assert "CREATE TABLE IF NOT EXISTS link_visits " in tables["analytics"]
    assert "CREATE TABLE IF NOT EXISTS counted_clicks " in tables["analytics"]
    assert migrations["analytics"].url_setting == "analytics_database_url"
    (bench,) = entry_points(group="linkflow.bench", name="spool_append_rate")
    assert callable(bench.load())
