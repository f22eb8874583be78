"""Each service's PostgreSQL role, made by ``linkflow migrate``: ``linkflow_<service>``,
never a superuser, allowed what its service's migrations grant it
(:attr:`shared.db.Migration.grants`) and nothing else.

A role's password is ``LINKFLOW_<SERVICE>_DATABASE_PASSWORD`` as migrate
sees it; unset, the role's password is left as it is (none on a server
that trusts its clients, as the test suite's; or one set by hand). It goes
to the server as a SCRAM verifier, never in clear: no statement log, no
``pg_stat_activity`` can show it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

import asyncpg

from shared import db, roster

SERVICES: Final = tuple(s.name for s in roster.ALL)
# Roles belong to the cluster, and an advisory lock to one database: role
# changes take this lock in the maintenance database, so that migrators of
# any database of the cluster (the test suite's, in parallel) take turns.
ROLES_LOCK: Final = 7310003
# PostgreSQL's own default (scram_iterations).
SCRAM_ITERATIONS: Final = 4096


def role(service: str) -> str:
    return f"linkflow_{service}"


def password_variable(service: str) -> str:
    return f"LINKFLOW_{service.upper()}_DATABASE_PASSWORD"


def passwords(environ: Mapping[str, str]) -> dict[str, str]:
    """The role passwords migrate was given, by service."""
    return {s: environ[password_variable(s)] for s in SERVICES if environ.get(password_variable(s))}


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, as
    libpq's PQencryptPasswordConn makes it; no SASLprep, which leaves an
    ASCII password as it is)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored)}:{b64(server)}"


async def ensure(url: str, given: Mapping[str, str]) -> None:
    """Every service's role exists on the cluster of ``url``, may log in and
    no more (no superuser, no role or database creation, no replication, no
    membership of another role), with the password ``given`` for it."""
    maintenance = db.with_database(url, "postgres") if db.database_name(url) else url
    conn = await asyncpg.connect(maintenance)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLES_LOCK)
            for service in SERVICES:
                await _ensure_role(conn, role(service), given.get(service))
    finally:
        await conn.close()


async def _ensure_role(conn: asyncpg.Connection, name: str, password: str | None) -> None:
    # Each ALTER only when needed: a migrator that owns the tables without
    # being a superuser may make roles, not touch every attribute of one.
    found = await conn.fetchrow(
        "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls"
        " OR NOT rolcanlogin AS excess FROM pg_roles WHERE rolname = $1",
        name,
    )
    if found is None:
        await conn.execute(f"CREATE ROLE {name} LOGIN")
    elif found["excess"]:
        await conn.execute(
            f"ALTER ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        )
    memberships = await conn.fetch(
        "SELECT quote_ident(g.rolname) AS name FROM pg_auth_members m"
        " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
        " WHERE u.rolname = $1",
        name,
    )
    for granted in memberships:
        await conn.execute(f"REVOKE {granted['name']} FROM {name}")
    if password:
        # A verifier holds no quote: base64, '$' and ':' only.
        await conn.execute(f"ALTER ROLE {name} PASSWORD '{scram_verifier(password)}'")


def grants_sql(granted: Sequence[tuple[str, str]]) -> str:
    """The rights of every service's role in the current database: all
    revoked, then ``granted`` ((service, "SELECT ON links") pairs). Run in
    one transaction (:func:`shared.db.migrate`), after the tables exist."""
    on_database = (
        "DO $$ BEGIN EXECUTE format('{} ON DATABASE %I {} {}', current_database()); END $$;"
    )
    lines = [
        # Only the owner and the roles granted below connect, create in the
        # schema (PostgreSQL before 15 let everyone) or call linkflow's
        # functions (which run as their owner: services/click_recorder).
        on_database.format("REVOKE ALL", "FROM", "PUBLIC"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        """DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.proname LIKE 'linkflow\\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;""",
    ]
    for service in SERVICES:
        name = role(service)
        lines += [
            on_database.format("REVOKE ALL", "FROM", name),
            f"REVOKE ALL ON SCHEMA public FROM {name};",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name};",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name};",
            f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {name};",
        ]
    for service in dict.fromkeys(s for s, _ in granted):
        lines += [
            on_database.format("GRANT CONNECT", "TO", role(service)),
            f"GRANT USAGE ON SCHEMA public TO {role(service)};",
        ]
    lines += [f"GRANT {what} TO {role(service)};" for service, what in granted]
    return "\n".join(lines) + "\n"


async def own_database(url: str, service: str) -> None:
    """A database of ``service``'s alone, where its role makes its own
    tables (the webhooks service: it shares no code with the others, its
    migrations included). Nobody else may connect; the role may create in
    the public schema and so owns what it makes, and nothing more."""
    await db.ensure_database(url)
    name = role(service)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(
                "DO $$ BEGIN EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC',"
                " current_database()); END $$;"
            )
            await conn.execute(
                "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO "
                + name
                + "', current_database()); END $$;"
            )
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {name}")
    finally:
        await conn.close()
