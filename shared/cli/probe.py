"""``linkflow probe [SERVICE]``: is a linkflow service on this host alive?

The container image's ``HEALTHCHECK``: one image runs every service, so with
no name the probe asks each service's port (``LINKFLOW_<SERVICE>_PORT``, or
its default) for ``/healthz`` and succeeds on the first that answers 200.
Standard library only: it runs every few seconds in every container."""

from __future__ import annotations

import os
import urllib.request

from shared import roster


def probe(service: str | None) -> int:
    for s in roster.ALL:
        if service not in (None, s.name):
            continue
        port = os.environ.get(f"LINKFLOW_{s.name.upper()}_PORT", str(s.port))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    print(f"linkflow probe: {s.name} healthy on :{port}")
                    return 0
        except OSError:
            continue
    print(f"linkflow probe: no healthy {service or 'linkflow service'} on this host")
    return 1
