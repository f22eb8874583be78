"""The gateway's ASGI app: one lifespan that connects, and the redirect in front."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import TypedDict

from fastapi import FastAPI

from services.link import api, domain_api, replicas
from services.link.cache import LinkCache
from services.link.domains import Domains
from services.link.events import LinkEvents
from services.link.limits import Limits
from services.link.load import LoadReporter
from services.link.orphans import Orphans
from services.link.passwords import Passwords
from services.link.publisher import ClickPublisher
from services.link.redirect import Gateway
from services.link.settings import Settings
from services.link.spool import Spool
from services.link.store import LinkStore
from services.link.unlock import UnlockKeys
from services.link.validation import LinkFields
from services.link.visitors import Visitors
from shared import db, roster, useragent
from shared.geo import Countries
from shared.http import checks, health
from shared.http.access import Access
from shared.http.apps import service_app
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.urls import default_host

log = logging.getLogger(__name__)


class State(TypedDict):
    deps: api.Deps


def clicks_connected(clicks: ClickPublisher) -> health.Check:
    async def check() -> str | None:
        # Redirects still answer (from the spool) while this is down.
        return None if clicks.connected else "the click connection to NATS is down"

    return check


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build(settings: Settings) -> Gateway:
    if settings.common.bot_agents:
        useragent.add_bot_tokens(settings.common.bot_agents)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        # Each resource is entered as it is acquired, so a start that fails
        # halfway releases what it had, and a stop releases all, in reverse:
        # the order below is the shutdown's, read from the bottom up.
        async with contextlib.AsyncExitStack() as stack:
            # Closed last: min_size 0, so nothing connects yet.
            pool = await db.create_pool(
                settings.common.database_url, statement_timeout=settings.statement_timeout
            )
            stack.push_async_callback(pool.close)
            nc = await bus.service_connection(stack, settings.common, roster.LINK)
            js = nc.jetstream()
            spool = Spool(settings.spool_path(), settings.spool_max_bytes)
            # A PubAck per click until CLICKS is known to have one replica.
            clicks = ClickPublisher(
                settings.common.nats_url,
                settings.click_publish_timeout,
                spool,
                max_group=1,
                creds=settings.common.nats_creds,
                inbox_prefix=bus.inbox_prefix(roster.LINK.name),
            )
            await replicas.check(js, clicks)
            # Entered before its start, which may fail after it connected:
            # stop() is safe on a publisher that never started.
            stack.push_async_callback(clicks.stop)
            await clicks.start()
            ring = await access.open(js)
            stack.push_async_callback(ring.stop)
            kv = await js.key_value(topology.KV_LINKS)
            store = LinkStore(pool)
            cache = LinkCache(kv, store.entry)
            cache.start()
            stack.push_async_callback(cache.stop)
            domains = Domains(
                await js.key_value(topology.KV_DOMAINS), default_host(settings.common.public_url)
            )
            domains.start()
            stack.push_async_callback(domains.stop)
            limits = Limits(await js.key_value(topology.KV_VISITS))
            limits.start()
            stack.push_async_callback(limits.stop)
            # Rules read GeoIP data and user agents; both are loaded before the
            # first redirect (0.1 s each), off the event loop.
            countries = await asyncio.to_thread(Countries().load)
            await asyncio.to_thread(useragent.warm)
            salts = await js.key_value(topology.KV_SALTS)
            visitors = Visitors(salts)
            # The keys of the cookies that remember a link's right password.
            unlock_keys = UnlockKeys(salts)
            load = LoadReporter(nc, f"{socket.gethostname()}:{settings.port}", settings.busy_above)
            # The last second's orphan visits go out after the loops stop,
            # before NATS drains.
            stack.push_async_callback(orphans.flush, nc)
            background = Loops(
                "gateway", [visitors.loop(), unlock_keys.loop(), load.loop(), orphans.loop(nc)]
            )
            background.start()
            stack.push_async_callback(background.stop)
            watch = asyncio.create_task(replicas.follow(js, clicks), name="clicks-replicas")
            stack.push_async_callback(cancelled, watch)
            # Normally loaded before the first redirect; until then a limited
            # link answers 503 (the others are redirected) and /readyz says so.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(limits.synced.wait(), domains.synced.wait()), 5
                )
            gateway.attach(cache, clicks, countries, visitors, limits, domains, unlock_keys)
            app.router.routes.extend(
                health.routes(
                    {
                        "nats": checks.nats_connected(nc),
                        "clicks": clicks_connected(clicks),
                        "database": checks.database(pool),
                        "keys": access.check,
                        "visit_counts": checks.synced(limits.synced, "visit counts"),
                        "domains": checks.synced(domains.synced, "domains"),
                    }
                )
            )
            # On exit, redirects in flight have finished (uvicorn waits for
            # them); the stack then stops the replicas watch, the background
            # loops, the visit counts, the cache and the key ring, drains the
            # clicks (their acks and outstanding publishes), closes NATS and
            # last the pool.
            yield {
                "deps": api.Deps(
                    store,
                    LinkEvents(nc, js, kv),
                    LinkFields(settings.common.public_url, domains),
                    settings.common.public_url,
                    cache,
                    domains,
                    passwords,
                )
            }

    access = Access.build(api.policy, settings.common, settings.write_rate)
    app = service_app(
        "linkflow gateway",
        lifespan,
        [api.router, domain_api.router],
        access,
        app_url=settings.common.app_url,
        methods=("GET", "POST", "PATCH", "DELETE"),
    )

    orphans = Orphans()
    # One bound on Argon2 work per process, for the API's hashing and the
    # visitors' checks alike.
    passwords = Passwords()
    gateway = Gateway(app, settings.anonymize_ip, orphans, settings.common.public_url, passwords)
    return gateway
