"""The README's commands install exactly what requirements.lock names."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_every_installed_dependency_is_locked_at_the_installed_version() -> None:
    """Fails when pyproject.toml gained a dependency that `just lock` has not
    pinned yet, or when what is installed is not what the lock says."""
    locked = _locked()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("linkflow", frozenset({"dev"}))]
    while todo:
        name, extras = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            envs = [{**default_environment(), "extra": e} for e in (*extras, "")]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = canonicalize_name(req.name)
            assert dep in locked, f"{dep} (needed by {name}) is not in requirements.lock"
            installed = metadata.version(dep)
            assert installed == locked[dep], (
                f"{dep} {installed} is installed, requirements.lock says {locked[dep]}: "
                "install with the README's command"
            )
            if (dep, frozenset(req.extras)) not in seen:
                seen.add((dep, frozenset(req.extras)))
                todo.append((dep, frozenset(req.extras)))
    assert {"msgspec", "nats-py", "fastapi", "pytest", "uvloop"} <= {name for name, _ in seen}


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert ci[0].startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert ci[0].endswith("&& .venv/bin/just test")
    assert "-c requirements.lock" in ci[0]
    assert f"    {ci[0]}\n" in readme


def test_every_pytest_plugin_comes_from_the_lock(pytestconfig: pytest.Config) -> None:
    """A plugin the environment brought along (CI's Python had pytest-benchmark,
    which failed the suite under xdist) means the suite is not running in the
    environment the README's command builds."""
    locked = _locked()
    strays = sorted(
        f"{dist.project_name} {dist.version}"
        for _, dist in pytestconfig.pluginmanager.list_plugin_distinfo()
        if canonicalize_name(dist.project_name) not in locked
    )
    assert not strays, f"pytest plugins not in requirements.lock: {strays}"


def _recipe(name: str) -> str:
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "just"), "--show", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout


def test_just_test_lints_then_runs_the_suite_and_ci_runs_what_it_leaves_out() -> None:
    """Every marker `just test` leaves out is run by a recipe that `.ci/run`
    calls: no test is left to nobody."""
    test = _recipe("test")
    assert re.search(r"^test \*args: lint$", test, re.M), test
    left_out = set(re.findall(r"not (\w+)", test))
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "just" in line]
    recipes = [name for line in ci for name in re.findall(r"just (\w+)", line)]
    run_by_ci = {marker for name in recipes for marker in re.findall(r"-m \"?(\w+)", _recipe(name))}
    assert "test" in recipes
    assert left_out, test
    assert left_out <= run_by_ci, (
        f"left out by `just test`, run by no CI recipe: {left_out - run_by_ci}"
    )
