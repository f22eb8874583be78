"""``linkflow keys`` as an operator runs it, against a real NATS server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from nats.aio.client import Client

from shared import keys
from tests.servers import Servers


def linkflow(servers: Servers, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINKFLOW_NATS_URL": servers.nats_url}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_list_revoke(servers: Servers, nc: Client) -> None:
    made = linkflow(servers, "keys", "create", "ci", "--scope", "links:read", "--expires", "1h")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"lf_[A-Za-z0-9]{32}", key)
    assert key not in made.stdout.strip().splitlines()[0]
    held = keys.decode(
        (await (await nc.jetstream().key_value(keys.KV_KEYS)).get("ci")).value or b""
    )
    assert held.sha256 == keys.digest(key)
    assert held.scopes == ("links:read",)
    assert held.expires_at is not None

    default = linkflow(servers, "keys", "create", "ops-team")
    assert "scopes admin" in default.stdout

    listed = linkflow(servers, "keys", "list")
    assert listed.returncode == 0
    assert key not in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith("ci "))
    assert key[:9] in row
    assert "links:read" in row
    assert row.endswith("active")

    again = linkflow(servers, "keys", "create", "ci")
    assert again.returncode == 1
    assert again.stderr.strip() == "linkflow keys: a key named 'ci' exists; revoke it first"

    gone = linkflow(servers, "keys", "revoke", "ci")
    assert gone.returncode == 0
    listed = linkflow(servers, "keys", "list")
    assert next(x for x in listed.stdout.splitlines() if x.startswith("ci ")).endswith("revoked")
    # A revoked key's name may be given to a new key.
    assert linkflow(servers, "keys", "create", "ci").returncode == 0


async def test_mistakes_are_one_line(servers: Servers, nc: Client) -> None:
    for args, says in [
        (("keys", "revoke", "nobody"), "linkflow keys: no key named 'nobody'"),
        (("keys", "create", "bad name"), "linkflow keys: a key name is 1-64 of"),
        (("keys", "create", "x", "--expires", "soon"), "linkflow keys: --expires: not a duration"),
    ]:
        done = linkflow(servers, *args)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(says), done.stderr
    unknown_scope = linkflow(servers, "keys", "create", "x", "--scope", "everything")
    assert unknown_scope.returncode == 2
    assert "invalid choice: 'everything'" in unknown_scope.stderr
    assert "Traceback" not in unknown_scope.stderr


def test_no_nats_is_one_line() -> None:
    env = {**os.environ, "LINKFLOW_NATS_URL": "nats://127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("linkflow keys: cannot reach NATS at nats://127.0.0.1:1")
    assert done.stderr.count("\n") == 1
