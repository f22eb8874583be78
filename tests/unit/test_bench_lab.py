"""The benchmark lab (shared/bench/) installs nothing and needs nothing the
run install (``pip install -c requirements.lock -e .``) lacks: without wrk
``linkflow bench`` says so in one line, before starting any server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

from tests.unit.test_layout import imported

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", [[], ["--system"], ["--webhooks"]])
def test_without_wrk_the_bench_says_so_in_one_line(tmp_path: Path, mode: list[str]) -> None:
    # A PATH with no wrk, but an apt-get that leaves a mark if it is ever run.
    bin_dir, tmp = tmp_path / "bin", tmp_path / "tmp"
    bin_dir.mkdir()
    tmp.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f"#!/bin/sh\necho called > {tmp_path / 'apt-get-ran'}\n")
    apt.chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir), "TMPDIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "--duration", "1", "--rounds", "1", *mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stdout == "", done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("linkflow bench: wrk not found on PATH: install it"), lines
    assert "apt-get install wrk" in lines[0]
    assert not (tmp_path / "apt-get-ran").exists()
    # Nothing started: no bench home (servers' data) was made.
    assert list(tmp.iterdir()) == []


def _source(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lab_needs_only_the_run_install() -> None:
    """Every module the lab imports, and those of shared/ it reaches, is the
    standard library's, linkflow's own, or from a dependency without extra:
    no ModuleNotFoundError on the run install (httpx is the dev extra's)."""
    run_deps = {
        _norm(re.match(r"[A-Za-z0-9._-]+", req).group())  # type: ignore[union-attr]
        for req in requires("linkflow") or []
        if "extra ==" not in req
    }
    providers = packages_distributions()
    seen: set[Path] = set()
    todo = sorted((ROOT / "shared" / "bench").glob("*.py"))
    outside: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            top = name.split(".")[0]
            if top == "shared":
                found = _source(name)
                if found is not None:
                    todo.append(found)
            elif top not in sys.stdlib_module_names and top != "__future__":
                dists = {_norm(d) for d in providers.get(top, [])}
                if not dists & run_deps:
                    outside.add(f"{path.relative_to(ROOT)} imports {name}")
    assert not outside, sorted(outside)
