"""A stolen service identity on PostgreSQL: each service's role, as
``linkflow migrate`` makes it, does its service's work with the service's
own code and is refused everything beyond it; none is a superuser.

Roles are the cluster's: every test of the session's PostgreSQL shares them
(with the one password below), each on databases of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from services.cache_refresher.reconcile import truth
from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.link.store import LinkStore
from shared.cli.migrate import migrate_all
from shared.contracts import Click
from tests.servers import Servers

SERVICES = ("link", "click_recorder", "cache_refresher", "analytics", "webhooks")
# The same for every test: a test setting its own would lock another out.
PASSWORD = "abuse-suite-role-password"
REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidAuthorizationSpecificationError)


def as_role(url: str, service: str) -> str:
    """``url`` with the service's role (docs/security.md, "Database roles") and password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"linkflow_{service}:{quote(PASSWORD, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Databases:
    main: str  # the owner's URLs, as migrate has them
    analytics: str
    webhooks: str
    env: dict[str, str]

    def role(self, service: str) -> str:
        return as_role(self.analytics if service == "analytics" else self.main, service)


@pytest.fixture
async def databases(servers: Servers) -> AsyncIterator[Databases]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    main, analytics = servers.pg_url(name), servers.pg_url(f"{name}_analytics")
    webhooks = servers.pg_url(f"{name}_webhooks")
    env = {
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": main,
        "LINKFLOW_ANALYTICS_DATABASE_URL": analytics,
        "LINKFLOW_WEBHOOKS_DATABASE_URL": webhooks,
        **{f"LINKFLOW_{s.upper()}_DATABASE_PASSWORD": PASSWORD for s in SERVICES},
    }
    await migrate_all(env)
    yield Databases(main, analytics, webhooks, env)
    conn = await asyncpg.connect(servers.pg_url("postgres"))
    try:
        for db in (name, f"{name}_analytics", f"{name}_webhooks"):
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        await conn.close()


async def refused(url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def with_pool(url: str, use: Callable[[asyncpg.Pool], Awaitable[object]]) -> object:
    pool = await asyncpg.create_pool(url, min_size=0, max_size=2)
    try:
        return await use(pool)
    finally:
        await pool.close()


async def test_no_service_role_is_a_superuser_or_more(databases: Databases) -> None:
    conn = await asyncpg.connect(databases.main)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,"
            " rolcanlogin, (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)"
            " AS memberships FROM pg_roles r WHERE rolname = ANY($1)",
            [f"linkflow_{s}" for s in SERVICES],
        )
    finally:
        await conn.close()
    assert {r["rolname"] for r in rows} == {f"linkflow_{s}" for s in SERVICES}
    for r in rows:
        assert r["rolcanlogin"], r["rolname"]
        for power in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls"):
            assert not r[power], (r["rolname"], power)
        assert r["memberships"] == 0, r


async def test_each_role_does_its_services_work(databases: Databases) -> None:
    now = datetime.now(UTC)

    async def gateway(pool: asyncpg.Pool) -> None:
        store = LinkStore(pool)
        await store.create(None, "roles", "https://example.com", 302, [], None, actor="abuse")
        assert await store.update(None, "roles", {"url": "https://example.org"}, actor="abuse")
        assert await store.delete(None, "roles", actor="abuse")
        assert [v.changed_by for v in await store.history(None, "roles")] == ["abuse"] * 3
        await store.create(None, "kept", "https://example.net", 301, ["a"], None)
        await store.create("go.example.com", "kept", "https://example.org", 301, [], None)
        assert await store.has_links("go.example.com")

    await with_pool(databases.role("link"), gateway)

    async def refresher(pool: asyncpg.Pool) -> None:
        assert set(await truth(pool)) >= {"kept"}

    await with_pool(databases.role("cache_refresher"), refresher)

    async def recorder(pool: asyncpg.Pool) -> None:
        partitions = Partitions(pool, retention=3 * 86400)
        await partitions.maintain()  # today and the next week, ahead
        record = ClickRecorder(pool, partitions)
        # One click of today, one from long ago: its day's partition is made
        # at once (the definer's rights), then the same insert again.
        old = now - timedelta(days=30)
        clicks = [Click(id="c1", code="kept", ts=now), Click(id="c2", code="kept", ts=old)]
        await record.insert(clicks)
        await record.insert(clicks)  # a redelivery: ON CONFLICT, no error
        await partitions.maintain()  # the retention drops the old day whole

    await with_pool(databases.role("click_recorder"), recorder)
    owner = await asyncpg.connect(databases.main)
    try:
        assert await owner.fetchval("SELECT array_agg(id ORDER BY id) FROM clicks") == ["c1"]
    finally:
        await owner.close()

    conn = await asyncpg.connect(databases.role("analytics"))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        assert tables
        # Every table of its database, a new one included: none forgotten.
        for t in tables:
            for right in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert await conn.fetchval(
                    "SELECT has_table_privilege($1, $2)", t["tablename"], right
                ), (t["tablename"], right)
        await conn.execute("INSERT INTO links_created_daily VALUES (current_date, 1)")
        await conn.execute("UPDATE links_created_daily SET count = 2")
        await conn.execute("DELETE FROM links_created_daily")
    finally:
        await conn.close()


async def test_each_role_is_refused_beyond_its_work(databases: Databases) -> None:
    refresher, recorder = databases.role("cache_refresher"), databases.role("click_recorder")
    link, analytics = databases.role("link"), databases.role("analytics")
    # The cache-refresher reads links, and nothing else.
    await refused(refresher, "INSERT INTO links (code, url) VALUES ('x', 'https://x.test')")
    await refused(refresher, "UPDATE links SET url = 'https://evil.test'")
    await refused(refresher, "DELETE FROM links")
    await refused(refresher, "SELECT count(*) FROM clicks")
    await refused(refresher, "SELECT count(*) FROM link_versions")
    # The recorder inserts clicks and reads them (its export): it cannot
    # change or delete one, read links, drop or empty the table, nor make
    # tables of its own.
    await refused(recorder, "SELECT count(*) FROM links")
    await refused(recorder, "UPDATE clicks SET ip = NULL")
    await refused(recorder, "DELETE FROM clicks")
    await refused(recorder, "TRUNCATE clicks")
    await refused(recorder, "DROP TABLE clicks")
    await refused(recorder, "CREATE TABLE mine (x int)")
    await refused(recorder, "UPDATE links SET url = 'https://evil.test'")
    # The gateway keeps links: it deletes none for good, drops nothing, and
    # neither reads nor writes clicks, nor calls the recorder's functions.
    await refused(link, "DELETE FROM links")
    await refused(link, "TRUNCATE links")
    await refused(link, "DROP TABLE links")
    await refused(link, "DELETE FROM link_versions")
    await refused(link, "SELECT count(*) FROM clicks")
    await refused(link, "INSERT INTO clicks (id, code, ts) VALUES ('x', 'x', now())")
    await refused(link, "SELECT linkflow_drop_click_partitions(now() + interval '1 year')")
    await refused(link, "CREATE TABLE mine (x int)")
    # Analytics keeps its own rows in its own database, and no more.
    await refused(analytics, "DROP TABLE click_stats")
    await refused(analytics, "CREATE TABLE mine (x int)")
    for service in ("link", "click_recorder", "cache_refresher"):
        with pytest.raises(REFUSED):  # not even a connection to the other database
            await asyncpg.connect(as_role(databases.analytics, service))
    with pytest.raises(REFUSED):
        await asyncpg.connect(as_role(databases.main, "analytics"))


async def test_migrate_takes_back_what_was_granted_by_hand(databases: Databases) -> None:
    """Exactly the rights the migrations say, again at each run: a right
    granted beside them, or a role made superuser, is gone after migrate."""
    owner = await asyncpg.connect(databases.main)
    try:
        await owner.execute("GRANT DELETE, TRUNCATE ON links TO linkflow_cache_refresher")
        await owner.execute("GRANT SELECT ON clicks TO linkflow_cache_refresher")
    finally:
        await owner.close()
    await migrate_all(databases.env)
    refresher = databases.role("cache_refresher")
    await refused(refresher, "DELETE FROM links")
    await refused(refresher, "TRUNCATE links")
    await refused(refresher, "SELECT count(*) FROM clicks")
    conn = await asyncpg.connect(refresher)
    try:
        assert await conn.fetchval("SELECT count(*) FROM links") == 0
    finally:
        await conn.close()


async def test_the_webhooks_database_is_its_roles_alone(databases: Databases) -> None:
    """The webhooks service (TypeScript) makes its own tables in a database
    of its own: its role may create there, keeps what it made through the
    next migrate, and connects nowhere else; no other role connects there."""
    mine = as_role(databases.webhooks, "webhooks")
    conn = await asyncpg.connect(mine)
    try:
        await conn.execute("CREATE TABLE endpoints (id text PRIMARY KEY)")
        await conn.execute("INSERT INTO endpoints VALUES ('ep_1')")
    finally:
        await conn.close()
    await migrate_all(databases.env)
    conn = await asyncpg.connect(mine)
    try:
        assert await conn.fetchval("SELECT count(*) FROM endpoints") == 1
    finally:
        await conn.close()
    for service in ("link", "click_recorder", "cache_refresher", "analytics"):
        with pytest.raises(REFUSED):
            await asyncpg.connect(as_role(databases.webhooks, service))
    for other in (databases.main, databases.analytics):
        with pytest.raises(REFUSED):
            await asyncpg.connect(as_role(other, "webhooks"))


async def test_the_recorders_partition_functions_are_bounded(databases: Databases) -> None:
    """They run as the owner, so their arguments are the recorder's reach:
    a stolen recorder role can neither empty ``clicks`` through the drop
    function nor make millions of tables through the other."""
    conn = await asyncpg.connect(databases.role("click_recorder"))
    try:
        with pytest.raises(asyncpg.RaiseError, match="last day"):
            await conn.execute("SELECT linkflow_drop_click_partitions('infinity')")
        with pytest.raises(asyncpg.RaiseError, match="400 days"):
            await conn.execute("SELECT linkflow_click_partitions('1900-01-01', '9999-12-31')")
        # What the recorder really asks still works.
        assert (
            await conn.fetchval(
                "SELECT linkflow_click_partitions(now() - interval '30 days', now())"
            )
            >= 0
        )
        await conn.execute("SELECT linkflow_drop_click_partitions(now() - interval '2 days')")
    finally:
        await conn.close()
