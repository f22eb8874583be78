"""Asking a linkflow service on this host whether it is alive or ready.

``linkflow probe [SERVICE]`` is the container image's ``HEALTHCHECK``: one
image runs every service, so with no name the probe asks each service's port
(read as the service reads it: ``LINKFLOW_<SERVICE>_PORT``, then
``LINKFLOW_PORT``, else its default; shared.settings.port) for ``/healthz``
and succeeds on the first that answers 200. ``not_ready`` is ``linkflow
up``'s and the system bench's question. Little beyond the standard library:
it runs every few seconds in every container."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping

from shared import roster, settings

# Straight to 127.0.0.1: an http_proxy in the environment must not answer for it.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def not_ready(port: int | str, timeout: float = 0.5) -> str | None:
    """None when the service on ``port`` answers ``/readyz`` with 200, else why not:
    its ``/readyz`` reasons, or what kept it from answering."""
    try:
        with _LOCAL.open(f"http://127.0.0.1:{port}/readyz", timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:  # 503 with {status, reasons}
        try:
            found = json.loads(exc.read()).get("reasons") or {}
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            found = {}
        return "; ".join(f"{k}: {v}" for k, v in found.items()) or f"HTTP {exc.code}"
    except (OSError, http.client.HTTPException) as exc:  # not listening, or too slow
        reason = getattr(exc, "reason", exc)
        return f"not answering on port {port} ({getattr(reason, 'strerror', None) or reason})"


def ports(service: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The port of ``service`` (of each, with None), by the settings loader:
    the environment's by default."""
    return {s.name: settings.port(s, environ) for s in roster.ALL if service in (None, s.name)}


def probe(service: str | None, listening: Mapping[str, int] | None = None) -> int:
    """0 if ``service`` (any, with None) answers ``/healthz`` on its port in
    ``listening`` (service name -> port; by default :func:`ports`)."""
    found = ports(service) if listening is None else listening
    for s in roster.ALL:
        if service not in (None, s.name) or s.name not in found:
            continue
        port = found[s.name]
        try:
            with _LOCAL.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    print(f"linkflow probe: {s.name} healthy on :{port}")
                    return 0
        except OSError:
            continue
    print(f"linkflow probe: no healthy {service or 'linkflow service'} on this host")
    return 1
