"""``linkflow keys`` as an operator runs it, against a real NATS server."""

from __future__ import annotations

import re
import subprocess

from nats.aio.client import Client

from shared.http import keys
from shared.jetstream import topology
from tests.harness import linkflow
from tests.servers import Servers


def keys_cli(servers: Servers, *args: str) -> subprocess.CompletedProcess[str]:
    return linkflow({"LINKFLOW_NATS_URL": servers.nats_url}, "keys", *args)


async def test_create_list_revoke(servers: Servers, nc: Client) -> None:
    made = keys_cli(servers, "create", "ci", "--scope", "links:read", "--expires", "1h")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"lf_[A-Za-z0-9]{32}", key)
    assert key not in made.stdout.strip().splitlines()[0]
    held = keys.decode(
        (await (await nc.jetstream().key_value(topology.KV_KEYS)).get("ci")).value or b""
    )
    assert held.sha256 == keys.digest(key)
    assert held.scopes == ("links:read",)
    assert held.expires_at is not None

    default = keys_cli(servers, "create", "ops-team")
    assert "scopes admin" in default.stdout

    listed = keys_cli(servers, "list")
    assert listed.returncode == 0
    assert key not in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith("ci "))
    assert key[:9] in row
    assert "links:read" in row
    assert row.split()[-2:] == ["active", "*"]  # every domain

    again = keys_cli(servers, "create", "ci")
    assert again.returncode == 1
    assert again.stderr.strip() == "linkflow keys: a key named 'ci' exists; revoke it first"

    gone = keys_cli(servers, "revoke", "ci")
    assert gone.returncode == 0
    listed = keys_cli(servers, "list")
    assert (
        next(x for x in listed.stdout.splitlines() if x.startswith("ci ")).split()[-2] == "revoked"
    )
    # A revoked key's name may be given to a new key.
    assert keys_cli(servers, "create", "ci").returncode == 0


async def test_mistakes_are_one_line(servers: Servers, nc: Client) -> None:
    for args, says in [
        (("revoke", "nobody"), "linkflow keys: no key named 'nobody'"),
        (("create", "bad name"), "linkflow keys: a key name is 1-64 of"),
        (
            ("create", "x", "--expires", "soon"),
            "linkflow keys: --expires: 'soon' is not a duration (use e.g. 500ms",
        ),
    ]:
        done = keys_cli(servers, *args)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(says), done.stderr
    unknown_scope = keys_cli(servers, "create", "x", "--scope", "everything")
    assert unknown_scope.returncode == 2
    assert "invalid choice: 'everything'" in unknown_scope.stderr
    assert "Traceback" not in unknown_scope.stderr


def test_no_nats_is_one_line() -> None:
    url = "nats://admin:hunter2@127.0.0.1:1"
    done = linkflow({"LINKFLOW_NATS_URL": url}, "keys", "list")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "linkflow keys: cannot reach NATS at nats://admin:***@127.0.0.1:1"
    )
    assert "hunter2" not in done.stderr
    assert done.stderr.count("\n") == 1


async def test_a_key_limited_to_domains(servers: Servers, nc: Client) -> None:
    made = keys_cli(
        servers, "create", "brand", "--scope", "links:write", "--domain", "Go.Example.com.",
        "--domain", "links.example",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "domains go.example.com, links.example" in made.stdout
    held = keys.decode(
        (await (await nc.jetstream().key_value(topology.KV_KEYS)).get("brand")).value or b""
    )
    assert held.domains == ("go.example.com", "links.example")
    row = next(x for x in keys_cli(servers, "list").stdout.splitlines() if x.startswith("brand "))
    assert row.split()[-1] == "go.example.com,links.example"
    bad = keys_cli(servers, "create", "bad", "--domain", "https://go.example.com/")
    assert bad.returncode == 1
    assert bad.stderr.startswith("linkflow keys: a domain must be a host name")
    assert bad.stderr.count("\n") == 1
