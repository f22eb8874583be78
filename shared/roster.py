"""The services linkflow runs: each one's name, label and default port, in
one place. Its settings, its NATS user, ``linkflow up`` and the NATS
permissions all read them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Service:
    # The package under services/, the settings prefix
    # (LINKFLOW_<NAME>_<FIELD>) and the NATS user.
    name: str
    # How logs, NATS client names and consumers call it.
    label: str
    # Its HTTP port unless LINKFLOW_<NAME>_PORT says otherwise: the API for
    # the gateway and analytics, /healthz, /readyz and /metrics for workers.
    port: int
    # Its CPU priority on a shared machine (``nice``; compose's cpu_shares,
    # Kubernetes' CPU requests and priority classes follow it): the work behind the redirect
    # yields the CPU to it during a spike and catches up after, since
    # JetStream holds the backlog.
    nice: int = 0
    # How it runs: "python" (``python -m services.<name>``) or "node" (a
    # TypeScript service: ``node services/<name>/src/main.ts``, with the
    # Node.js of the install, shared.node).
    runtime: str = "python"


# The niceness of the work behind the redirect (the workers, and the embedded
# PostgreSQL, which the gateway reads only for a link not in its cache and
# for its API), for their processes and their sessions' scheduling
# autogroups once each is ready (shared.cli.process): at 19 each gets about 1/70 of
# the CPU the gateway gets when both want it. It still runs in every gap the
# gateway leaves, so the workers also hold off while a gateway says
# redirects.busy (shared.jetstream.yielding); docs/architecture.md, "The click pipeline".
BACKGROUND: Final = 19
LINK: Final = Service("link", "link", 8080)
ANALYTICS: Final = Service("analytics", "analytics", 8081, nice=BACKGROUND)
CLICK_RECORDER: Final = Service("click_recorder", "click-recorder", 9101, nice=BACKGROUND)
CACHE_REFRESHER: Final = Service("cache_refresher", "cache-refresher", 9103, nice=BACKGROUND)
# Delivers link and click events to subscribers' URLs (TypeScript, built
# from the published contracts alone).
WEBHOOKS: Final = Service("webhooks", "webhooks", 8085, nice=BACKGROUND, runtime="node")
# Every service: what ``linkflow up`` runs, who has a NATS user and a
# database role, what compose, Kubernetes and Prometheus deploy. Stopped in
# this order: the gateway first, so no new clicks arrive while the workers
# and the webhooks service settle what they hold.
ALL: Final = (LINK, ANALYTICS, CLICK_RECORDER, CACHE_REFRESHER, WEBHOOKS)
