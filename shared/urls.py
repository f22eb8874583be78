"""Server URLs as they may appear in messages and logs."""

from __future__ import annotations

import urllib.parse


def redact(url: str) -> str:
    """``url`` without its password or token: ``nats://link:***@host:4222``.
    A comma-separated list (NATS cluster URLs) is redacted server by server."""
    if "," in url:
        return ",".join(redact(part) for part in url.split(","))
    parts = urllib.parse.urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url
    who, _, where = parts.netloc.rpartition("@")
    if ":" in who:
        shown = who.split(":", 1)[0] + ":***"
    elif parts.scheme.startswith("postgres"):
        return url  # a user name alone
    else:
        shown = "***"  # NATS's token@host: all of it is the secret
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{shown}@{where}"))
