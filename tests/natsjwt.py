"""NATS operator mode for tests: an operator, one account and its users as
signed JWTs, with credentials files as ``nsc`` writes them (nsc itself is
a Go tool this machine does not have; the formats are nats-io/jwt v2)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Identity:
    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(secrets.token_bytes(32), prefix)
        self.pair = nkeys.from_seed(bytearray(self.seed))
        self.public = self.pair.public_key.decode()


def _jwt(issuer: Identity, subject: str, name: str, nats: dict[str, Any]) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": secrets.token_hex(16).upper(),
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.pair.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


class Operator:
    """An operator with one account (JetStream enabled) and its users."""

    def __init__(self) -> None:
        self.operator = Identity(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Identity(nkeys.PREFIX_BYTE_ACCOUNT)
        # JetStream needs the server's own (system) account to exist.
        self.system = Identity(nkeys.PREFIX_BYTE_ACCOUNT)
        self.operator_jwt = _jwt(
            self.operator, self.operator.public, "linkflow-tests", {"type": "operator"}
        )
        unlimited = dict.fromkeys(
            ("subs", "data", "payload", "imports", "exports", "conn", "leaf"), -1
        )
        storage = dict.fromkeys(("mem_storage", "disk_storage", "streams", "consumer"), -1)
        self.account_jwt = _jwt(
            self.operator,
            self.account.public,
            "linkflow",
            {"type": "account", "limits": {**unlimited, **storage, "wildcards": True}},
        )
        self.system_jwt = _jwt(
            self.operator,
            self.system.public,
            "SYS",
            {"type": "account", "limits": {**unlimited, "wildcards": True}},
        )

    def server_config(self) -> str:
        return (
            f"operator: {self.operator_jwt}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {self.account.public}: {self.account_jwt}\n"
            f"  {self.system.public}: {self.system_jwt}\n"
            "}\n"
        )

    def user_creds(self, directory: Path, name: str, rule: dict[str, list[str]]) -> Path:
        """A credentials file for a user allowed ``rule`` (publish/subscribe)."""
        user = Identity(nkeys.PREFIX_BYTE_USER)
        token = _jwt(
            self.account,
            user.public,
            name,
            {
                "type": "user",
                "pub": {"allow": rule["publish"], "deny": rule.get("deny", [])},
                "sub": {"allow": rule["subscribe"]},
                "subs": -1,
                "data": -1,
                "payload": -1,
            },
        )
        path = directory / f"{name}.creds"
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
