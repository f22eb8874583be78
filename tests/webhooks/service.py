"""The webhooks service (TypeScript) as a test runs it: its own nats-server,
where it connects as the NATS user ``webhooks`` with exactly the rights
linkflow deploys for it (shared.cli.permissions), and a database of its own.
The suite's own connection is the admin user's."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared import node
from shared.cli import permissions
from shared.cli.servers import NatsServer, free_port, wait_until

SERVICE = Path(__file__).resolve().parents[2] / "services" / "webhooks"


def nats_config(admin: str, webhooks: str) -> str:
    """A nats-server config with an admin user and the ``webhooks`` user as
    linkflow deploys it (deploy/nats.conf, ``linkflow up``)."""
    rules = permissions.permissions()["webhooks"]
    users = [
        {"user": "admin", "password": admin},
        {
            "user": "webhooks",
            "password": webhooks,
            "permissions": {
                "publish": {"allow": rules["publish"]},
                "subscribe": {"allow": rules["subscribe"]},
            },
        },
    ]
    # JSON is valid nats-server configuration syntax.
    return json.dumps({"accounts": {"LF": {"jetstream": "enabled", "users": users}}})


@dataclass
class SecuredNats:
    server: NatsServer
    admin_url: str
    webhooks_url: str

    def violations(self) -> list[str]:
        """The server's permission violations: a right the service lacks."""
        log = self.server.log_path.read_text() if self.server.log_path else ""
        return [line for line in log.splitlines() if "Violation" in line]


@contextlib.contextmanager
def secured_nats(home: Path) -> Iterator[SecuredNats]:
    admin, webhooks = secrets.token_hex(16), secrets.token_hex(16)
    server = NatsServer(home / "nats", config=nats_config(admin, webhooks)).start()
    host = f"127.0.0.1:{server.port}"
    try:
        yield SecuredNats(
            server, f"nats://admin:{admin}@{host}", f"nats://webhooks:{webhooks}@{host}"
        )
    finally:
        server.stop()


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    base: str
    stderr: Path

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def running(home: Path, env: dict[str, str], timeout: float = 60) -> Iterator[Running]:
    """``node src/main.ts`` with ``env`` over this process's environment,
    its stderr in ``home``; yielded once /readyz answers 200."""
    node.npm_ci(SERVICE, os.environ)
    port = free_port()
    stderr = home / "webhooks.stderr"
    full = node.env({**os.environ, "LINKFLOW_WEBHOOKS_PORT": str(port), **env})
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [str(node.NODE), "src/main.ts"], cwd=SERVICE, env=full, stdout=err, stderr=err
        )
    service = Running(proc, f"http://127.0.0.1:{port}", stderr)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("the webhooks service exited:\n" + "\n".join(service.lines()))
            return _ready(service.base)

        try:
            wait_until(ready, timeout, "the webhooks service ready")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}:\n" + "\n".join(service.lines())) from None
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
