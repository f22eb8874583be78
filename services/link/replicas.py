"""How many clicks one PubAck may stand for, from the CLICKS stream's replicas.

A group's PubAck covers the whole group only because a stream of one replica
stores one connection's messages in order and, past the ingest queue that
``MAX_IN_FLIGHT`` keeps clear of, never drops one while storing a later one.
A replicated stream makes no such promise: when its leader changes in the
middle of a group, clicks queued at the old leader are lost while the later
ones reach the new leader and are acknowledged. So while CLICKS has more than
one replica, every click waits for its own PubAck.

The gateway starts with a PubAck per click and groups only once it has seen
the stream with one replica; it looks again every ``CHECK_INTERVAL``, as an
operator may change the replicas of a running stream (``nats stream edit``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from nats.js import JetStreamContext

from services.link.publisher import MAX_GROUP, ClickPublisher
from shared.jetstream import topology

log = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 30.0


def max_group(replicas: int) -> int:
    return MAX_GROUP if replicas <= 1 else 1


async def check(js: JetStreamContext, clicks: ClickPublisher) -> None:
    """Set the publisher's group size from the stream; keep it when the stream
    cannot be read (a PubAck per click until it is known to be safe)."""
    try:
        info = await js.stream_info(topology.CLICKS)
    except Exception as exc:
        log.warning("could not read the %s stream (%r); keeping up to %d clicks per PubAck",
                    topology.CLICKS, exc, clicks.max_group)  # fmt: skip
        return
    size = max_group(info.config.num_replicas or 1)
    if size != clicks.max_group:
        log.info("%s has %s replica(s): up to %d clicks per PubAck",
                 topology.CLICKS, info.config.num_replicas or 1, size)  # fmt: skip
        clicks.max_group = size


async def follow(js: JetStreamContext, clicks: ClickPublisher) -> None:
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        await check(js, clicks)
