"""Imports point down: shared/ imports no service, no service imports
another. What a service gives the `linkflow` command goes through declared
entry points (pyproject.toml)."""

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


def test_the_declared_entries_load() -> None:
    migrations = {e.name: e.load() for e in entry_points(group="linkflow.migrations")}
    assert "analytics_database_url" in migrations
    assert "CREATE TABLE" in migrations["analytics_database_url"]
    (bench,) = entry_points(group="linkflow.bench", name="spool_append_rate")
    assert callable(bench.load())
