"""Node for the tests that read linkflow's contracts as another language
would: ``tests/polyglot/``'s packages, installed by :mod:`shared.node`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shared import node
from shared.node import NODE

__all__ = ["NODE", "bin_", "env", "npm_ci", "run"]

POLYGLOT = Path(__file__).parent / "polyglot"


def env() -> dict[str, str]:
    return node.env(os.environ)


def npm_ci() -> Path:
    return node.npm_ci(POLYGLOT, os.environ)


def run(*args: str, cwd: Path = POLYGLOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``node args…`` in ``cwd`` with the packages installed; output captured."""
    npm_ci()
    return subprocess.run(
        [str(NODE), *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bin_(name: str, *args: str, cwd: Path = POLYGLOT) -> subprocess.CompletedProcess[str]:
    """An installed package's command (``tsc``, ``openapi-typescript``)."""
    return run(str(npm_ci() / ".bin" / name), *args, cwd=cwd)
