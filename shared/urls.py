"""Server URLs as they may appear in messages and logs."""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from typing import Final

from shared.contracts import HOST_PATTERN


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


_LOOPBACK = ("127.0.0.1", "localhost")


def origins(urls: str) -> list[str]:
    """What a browser sends as ``Origin`` from a page at one of ``urls``
    (comma-separated): ``scheme://host[:port]``, with both spellings of this
    machine's loopback address (a user of ``linkflow up`` may type either)."""
    if "," in urls:
        return list(dict.fromkeys(o for url in urls.split(",") for o in origins(url)))
    # As a browser writes it: lower case, and no port when it is the scheme's own.
    parts = urllib.parse.urlsplit(urls.strip().lower())
    name, port = parts.hostname or "", parts.port
    if ":" in name:
        name = f"[{name}]"  # IPv6
    default = {"http": 80, "https": 443}.get(parts.scheme)
    suffix = f":{port}" if port is not None and port != default else ""
    if name in _LOOPBACK:
        return [f"{parts.scheme}://{other}{suffix}" for other in _LOOPBACK]
    return [f"{parts.scheme}://{name}{suffix}"]


def default_host(public_url: str) -> str:
    """The default short domain: ``LINKFLOW_PUBLIC_URL``'s host, spelt as a
    request's ``Host`` is read (lower case, no port or trailing dot, IDNA)."""
    host = (urllib.parse.urlsplit(public_url).hostname or "").lower().rstrip(".")
    if not host.isascii():
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    return host


MAX_HOST: Final = 253
_HOST: Final = re.compile(HOST_PATTERN)


def host_name(value: str) -> str:
    """``value`` as a short domain's host: lower case, no trailing dot, IDNA
    (punycode) form; ValueError when it is not a host name."""
    host = value.strip().lower().rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("is not a valid host name") from None
    if len(host) > MAX_HOST or not _HOST.match(host):
        raise ValueError("must be a host name such as go.example.com (no scheme, port or path)")
    return host
