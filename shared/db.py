"""PostgreSQL helpers: pools, migrations, and which errors mean "database down"."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, NamedTuple, TypeVar

import asyncpg

from shared.errors import PermanentError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Migration(NamedTuple):
    """What a service declares under the ``linkflow.migrations`` entry points
    (pyproject.toml) for ``linkflow migrate``: idempotent DDL, and the name of
    the setting (of :class:`shared.settings.Common`) that holds its
    database's URL; and what each service's role may do with those tables
    (``(service, "SELECT ON links")`` pairs, granted after every migration:
    whatever a role held beyond them is revoked)."""

    url_setting: str
    sql: str
    grants: tuple[tuple[str, str], ...] = ()


# Errors that say the server is unreachable or restarting, not that the query
# is wrong: a worker holds its batch and retries instead of dead-lettering.
UNAVAILABLE: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)
# Errors that say the database refuses the data (SQLSTATE classes 22 and 23:
# a value it cannot store, a constraint a row breaks): no retry will help,
# and the fault is one row's, not its batch's.
REFUSED: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


async def write_batch(
    write: Callable[[Sequence[T]], Awaitable[object]], rows: Sequence[T]
) -> dict[int, Exception]:
    """``write`` the rows in one statement. If the database refuses them,
    write them one at a time instead: the rows it refuses come back by index
    as PermanentErrors (to be dead-lettered), every other row is written.
    Other errors, UNAVAILABLE ones first, are the caller's."""
    try:
        await write(rows)
        return {}
    except REFUSED as exc:
        if len(rows) == 1:
            return {0: _refused(exc)}
        log.warning("a batch of %d was refused (%s); writing it row by row", len(rows), exc)
    failures: dict[int, Exception] = {}
    for i, row in enumerate(rows):
        try:
            await write([row])
        except REFUSED as exc:
            failures[i] = _refused(exc)
    return failures


def _refused(exc: Exception) -> PermanentError:
    return PermanentError(f"refused by the database: {type(exc).__name__}: {exc}")


async def create_pool(
    url: str, *, max_size: int = 10, statement_timeout: float | None = None
) -> asyncpg.Pool:
    """A pool that opens connections on demand (min_size=0), so a service can
    start while the database is down and report it on ``/readyz``.

    ``statement_timeout`` (seconds) makes the server cancel any statement of
    these connections that runs longer (asyncpg.QueryCanceledError): the
    work stops there, not only the client's wait for it."""
    settings = {}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        max_inactive_connection_lifetime=60,
        # The client's own deadline stays a backstop behind the server's.
        command_timeout=30 if statement_timeout is None else statement_timeout + 5,
        server_settings=settings,
    )
    return pool


async def migrate(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # One migrator at a time when several processes start together.
        await conn.execute("SELECT pg_advisory_lock(7310001)")
        await conn.execute(schema)
    finally:
        await conn.close()


def database_name(url: str) -> str | None:
    """The database a libpq URL names: its ``dbname`` parameter, else its path
    (``postgresql://user@/name?host=/run/postgresql`` names ``name``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("not a PostgreSQL URL (postgresql://…)")
    query = urllib.parse.parse_qs(parts.query)
    named = query.get("dbname") or query.get("database")
    return named[-1] if named else urllib.parse.unquote(parts.path.lstrip("/")) or None


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead, every other part kept."""
    database_name(url)  # refuses what is not a PostgreSQL URL
    parts = urllib.parse.urlsplit(url)
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("dbname", "database")
    ]
    path = "/" + urllib.parse.quote(name, safe="")
    return urllib.parse.urlunsplit(parts._replace(path=path, query=urllib.parse.urlencode(query)))


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if missing (embedded server, tests)."""
    name = database_name(url)
    if name is None:  # libpq's default: the user's own database, not ours to create
        return
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # A name cannot be a bind parameter; quote_ident makes it one identifier.
            quoted = await conn.fetchval("SELECT quote_ident($1)", name)
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
