"""Raw clicks out of ``clicks`` (``GET /api/clicks``), streamed.

An export reads through a server-side cursor, ``CHUNK`` rows a fetch, and
hands each chunk to the response before it fetches the next: however many
rows the range holds, the process holds one chunk, and a client that reads
slowly slows the fetches (the ASGI server's back-pressure), not the memory.

Exports run on a pool of their own, as many connections as exports may run
at once (``LINKFLOW_CLICK_RECORDER_EXPORTS``, 429 beyond): the worker loops'
pool never lends one to an API call. Each fetch is a statement bounded by
``export_timeout``, and so is the time the transaction may sit idle while
the client does not read: a stalled export cannot hold its snapshot, nor
its lock on ``clicks`` (which a partition's creation or drop waits for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio
import asyncpg
import msgspec

from shared import metrics
from shared.http import sheets
from shared.http.problems import FieldError, Problem

COLUMNS: Final = (
    "id",
    "code",
    "domain",
    "ts",
    "referrer",
    "user_agent",
    "ip",
    "country",
    "is_bot",
    "request_id",
    "rule",
    "destination",
    "visitor",
)
# Rows a fetch: one chunk of the answer (about 300 KB of CSV).
CHUNK: Final = 1000
# The longest range one export may span; the default is the last day.
MAX_SPAN: Final = timedelta(days=31)
DEFAULT_SPAN: Final = timedelta(days=1)
FORMATS: Final = {"csv": sheets.MEDIA_TYPE, "ndjson": "application/x-ndjson"}
_ACCEPTED: Final = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
}
# A domain filter: NULL every domain, '' the default one (stored as NULL).
QUERY: Final = """
SELECT id, code, domain, ts, referrer, user_agent, ip, country, is_bot, request_id, rule,
       destination, visitor
FROM clicks
WHERE ts >= $1 AND ts < $2
  AND ($3::text IS NULL OR code = $3)
  AND ($4::text[] IS NULL OR coalesce(domain, '') = ANY($4))
ORDER BY ts, id
"""
_encode: Final = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Filter:
    start: datetime
    end: datetime
    code: str | None
    # Domains as stored ('' the default); None: every domain.
    domains: frozenset[str] | None


def _time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem.invalid(
            [FieldError(name, "must be an RFC 3339 date-time or a date (YYYY-MM-DD)")]
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def time_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """``[from, to)``: ``to`` defaults to now, ``from`` to a day before it;
    at most ``MAX_SPAN`` long (422 naming ``from``)."""
    to = datetime.now(UTC) if end is None else _time("to", end)
    frm = to - DEFAULT_SPAN if start is None else _time("from", start)
    if frm > to:
        raise Problem.invalid([FieldError("from", "must not be after 'to'")])
    if to - frm > MAX_SPAN:
        raise Problem.invalid([FieldError("from", f"an export spans at most {MAX_SPAN.days} days")])
    return frm, to


def host(value: str | None) -> str | None:
    """A ``domain`` filter as a request's ``Host`` names it; None: every domain."""
    if value is None:
        return None
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253 or "/" in name:
        raise Problem.invalid([FieldError("domain", "must be a host name")])
    return name


def media(fmt: str | None, accept: str | None) -> str:
    """The export's format: ``format`` if given, else the first of the
    ``Accept`` header's types that names one, else CSV."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise Problem.invalid([FieldError("format", "must be 'csv' or 'ndjson'")])
        return fmt
    for part in (accept or "").split(","):
        found = _ACCEPTED.get(part.split(";")[0].strip().lower())
        if found:
            return found
    return "csv"


class Exports:
    """The export pool and its slots: at most ``most`` exports at once."""

    def __init__(self, pool: asyncpg.Pool, most: int, timeout: float) -> None:
        self._pool = pool
        self._most = most
        self._timeout = timeout
        self._open = 0

    def admit(self) -> Callable[[], None]:
        """A slot, or a 429: the caller releases it, once, by calling what this returns."""
        if self._open >= self._most:
            raise Problem(
                429,
                f"{self._most} click exports are running on this server; try again",
                headers={"retry-after": "5"},
            )
        self._open += 1
        metrics.CLICK_EXPORTS.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open -= 1
                metrics.CLICK_EXPORTS.dec()

        return release

    async def chunks(self, where: Filter, fmt: str) -> AsyncIterator[bytes]:
        """The export's body, a chunk of rows at a time (CSV: a header first)."""
        encode = _csv if fmt == "csv" else _ndjson
        if fmt == "csv":
            yield sheets.rows([COLUMNS])
        domains = None if where.domains is None else sorted(where.domains)
        # A slot admits a connection: waiting longer than a fetch may run
        # means the pool is broken, not busy.
        async with self._pool.acquire(timeout=self._timeout) as conn:
            transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            await transaction.start()
            try:
                idle = max(1, round(self._timeout * 1000))  # a number: nothing to quote
                await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {idle}")
                cursor = await conn.cursor(QUERY, where.start, where.end, where.code, domains)
                while rows := await cursor.fetch(CHUNK):
                    metrics.CLICK_EXPORT_ROWS.inc(len(rows))
                    yield encode(rows)
                await transaction.commit()
            except BaseException:
                # A client gone cancels the body (the response's anyio task
                # group), and anyio cancels every later await in that scope
                # too: shielded, the rollback cancels the statement in flight
                # and hands the connection back clean.
                with anyio.move_on_after(self._timeout, shield=True), suppress(Exception):
                    await transaction.rollback()
                raise


def _csv(rows: Sequence[asyncpg.Record]) -> bytes:
    return sheets.rows(tuple(r) for r in rows)


def _ndjson(rows: Sequence[asyncpg.Record]) -> bytes:
    out = bytearray()
    for r in rows:
        out += _encode(_row(r))
        out += b"\n"
    return bytes(out)


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return dict(zip(COLUMNS, record, strict=True))
