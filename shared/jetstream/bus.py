"""NATS connection helper shared by every service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client

from shared.roster import Service
from shared.settings import Common
from shared.urls import redact

log = logging.getLogger(__name__)


class Unreachable(ConnectionError):
    """A first connect with ``forever=False`` found no NATS server: what a
    command-line tool says in its one line (shared.cli.main)."""


def inbox_prefix(user: str) -> str:
    """Replies to ``user`` (PubAcks, API answers, KV watch deliveries) arrive
    under a prefix that only its NATS user may subscribe to (shared.cli.permissions)."""
    return "_INBOX" if user == "admin" else f"_INBOX_{user}"


async def connect(
    url: str,
    name: str,
    *,
    creds: str = "",
    user: str = "admin",
    on_change: Callable[[], Awaitable[None]] | None = None,
    forever: bool = True,
) -> Client:
    """Connect for the life of a service: reconnect forever, notice a dead
    server within seconds (ping every 5 s, two missed pongs), and let the
    caller ``drain()`` on shutdown so in-flight acks and publishes go out.
    ``creds`` names a NATS credentials file (JWT and NKey seed); ``user`` is
    the identity whose inbox prefix replies use.
    With ``forever=False`` (command-line tools) a first connect that fails
    raises :class:`Unreachable`."""

    connected: list[Client] = []
    waiting_said = False  # a first connect's failure, said once

    async def disconnected() -> None:
        if connected and (connected[0].is_draining or connected[0].is_closed):
            return  # our own drain or close, not an outage
        log.warning("%s: disconnected from NATS", name)
        if on_change:
            await on_change()

    async def reconnected() -> None:
        log.info("%s: reconnected to NATS", name)
        if on_change:
            await on_change()

    async def error(exc: Exception) -> None:
        nonlocal waiting_said
        if forever and not connected and not waiting_said:
            # nats-py retries a first connect itself: without this line a
            # service started before NATS would wait without a word. (A
            # command-line tool gives up and says so in its one line.)
            waiting_said = True
            log.warning(
                "%s: cannot reach NATS at %s yet (%s); retrying until it answers",
                name,
                redact(url),
                exc or type(exc).__name__,
            )
            return
        # Outages report here on every reconnect attempt (debug); a refused
        # permission is a deployment mistake an operator must see.
        level = logging.WARNING if "permissions violation" in str(exc).lower() else logging.DEBUG
        log.log(level, "%s: NATS error: %s", name, exc)

    while True:
        try:
            nc = await nats.connect(
                # A cluster's URLs, comma-separated: any one that answers will do.
                [part.strip() for part in url.split(",") if part.strip()],
                name=name,
                # -1 also makes nats-py retry a first connect forever: a
                # command-line tool gives up after a few tries and says so.
                max_reconnect_attempts=-1 if forever else 3,
                reconnect_time_wait=0.5,
                ping_interval=5,
                max_outstanding_pings=2,
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                # Buffer publishes made while reconnecting instead of failing them.
                pending_size=64 * 1024 * 1024,
                user_credentials=creds or None,
                inbox_prefix=inbox_prefix(user),
            )
            connected.append(nc)
            if waiting_said:
                log.info("%s: connected to NATS", name)
            return nc
        except Exception as exc:  # NoServersError, OSError, timeouts
            if not forever:
                raise Unreachable(
                    f"cannot reach NATS at {redact(url)}: {exc or type(exc).__name__}"
                ) from None
            # nats-py reconnects forever only once connected: the first
            # connect is retried here, so a service may start before NATS.
            log.warning("%s: cannot reach NATS at %s (%s); retrying", name, redact(url), exc)
            await asyncio.sleep(1)


async def close(nc: Client) -> None:
    """Drain (flush pending acks and publishes, then close); while NATS is
    unreachable there is nothing to drain to, so just close."""
    if nc.is_connected:
        try:
            await nc.drain()
            return
        except Exception as exc:
            log.warning("drain failed (%r); closing", exc)
    if not nc.is_closed:
        await nc.close()


async def service_connection(
    stack: contextlib.AsyncExitStack, common: Common, service: Service
) -> Client:
    """``service``'s connection for its life, drained and closed when
    ``stack`` unwinds (a start failing later, or the shutdown)."""
    nc = await connect(common.nats_url, service.label, creds=common.nats_creds, user=service.name)
    stack.push_async_callback(close, nc)
    return nc
