"""The ``links`` table: the gateway is its only writer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from shared.contracts import LinkEntry, Rule, decode_rules, millis

_COLUMNS: Final = (
    "code, url, redirect_type, tags, expires_at, max_visits, forward_query, rules, "
    "version, created_at, updated_at"
)
# A code whose link was deleted may be taken again; its version goes on from
# the deleted one so that readers never see a version repeat. A live code
# conflicts: no row comes back.
_REVIVE: Final = """ON CONFLICT (code) DO UPDATE SET
    url = EXCLUDED.url, redirect_type = EXCLUDED.redirect_type,
    tags = EXCLUDED.tags, expires_at = EXCLUDED.expires_at,
    max_visits = EXCLUDED.max_visits, forward_query = EXCLUDED.forward_query,
    rules = EXCLUDED.rules,
    version = links.version + 1, created_at = now(), updated_at = now(),
    deleted_at = NULL
WHERE links.deleted_at IS NOT NULL"""


class Link(msgspec.Struct, kw_only=True, frozen=True):
    code: str
    url: str
    redirect_type: int
    tags: list[str]
    expires_at: datetime | None
    max_visits: int | None = None
    forward_query: bool = False
    rules: list[Rule] = []
    version: int
    created_at: datetime
    updated_at: datetime

    def entry(self) -> LinkEntry:
        return LinkEntry(
            url=self.url,
            redirect_type=self.redirect_type,
            expires_at=self.expires_at,
            version=self.version,
            max_visits=self.max_visits,
            forward_query=self.forward_query,
            rules=self.rules,
            created_at=millis(self.created_at),
        )


def _link(row: asyncpg.Record) -> Link:
    return Link(
        code=row["code"],
        url=row["url"],
        redirect_type=row["redirect_type"],
        tags=list(row["tags"]),
        expires_at=row["expires_at"],
        max_visits=row["max_visits"],
        forward_query=row["forward_query"],
        rules=decode_rules(row["rules"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def encode_rules(rules: list[Rule]) -> str:
    return msgspec.json.encode(rules).decode()


class Version(msgspec.Struct, kw_only=True, frozen=True):
    """A link as it was after one change, and who made it."""

    link: Link
    deleted_at: datetime | None
    changed_by: str | None


class CodeTaken(Exception):
    pass


class LinkStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _as(self, actor: str | None) -> AsyncIterator[PoolConnectionProxy]:
        """A transaction whose link changes the history records as ``actor``'s
        (the key's name; the trigger reads it from ``linkflow.actor``)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('linkflow.actor', $1, true)", actor or "")
            yield conn

    async def create(
        self,
        code: str,
        url: str,
        redirect_type: int,
        tags: list[str],
        expires_at: datetime | None,
        actor: str | None = None,
        *,
        max_visits: int | None = None,
        forward_query: bool = False,
        rules: list[Rule] | None = None,
    ) -> Link:
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                f"""
                INSERT INTO links (code, url, redirect_type, tags, expires_at,
                                   max_visits, forward_query, rules)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
                {_REVIVE}
                RETURNING {_COLUMNS}
                """,
                code,
                url,
                redirect_type,
                tags,
                expires_at,
                max_visits,
                forward_query,
                encode_rules(rules or []),
            )
        if row is None:
            raise CodeTaken(code)
        return _link(row)

    async def create_many(
        self, rows: list[tuple[str, str, int, list[str], datetime | None]], actor: str | None = None
    ) -> tuple[list[Link], dict[str, str]]:
        """(code, url, redirect_type, tags, expires_at) rows in one statement,
        each as :meth:`create` would: the links made, and for every code that
        was taken, the URL it holds. Codes must be distinct."""
        codes = [r[0] for r in rows]
        async with self._as(actor) as conn:
            made = await conn.fetch(
                f"""
                INSERT INTO links (code, url, redirect_type, tags, expires_at)
                SELECT r.code, r.url, r.redirect_type,
                       ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.expires_at
                FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[],
                            $5::timestamptz[]) AS r(code, url, redirect_type, tags, expires_at)
                {_REVIVE}
                RETURNING {_COLUMNS}
                """,
                codes,
                [r[1] for r in rows],
                [r[2] for r in rows],
                # A text[] per row would flatten in unnest: each travels as JSON.
                [msgspec.json.encode(r[3]).decode() for r in rows],
                [r[4] for r in rows],
            )
            links = [_link(row) for row in made]
            made_codes = {link.code for link in links}
            taken = await conn.fetch(
                "SELECT code, url FROM links WHERE code = ANY($1) AND deleted_at IS NULL",
                [c for c in codes if c not in made_codes],
            )
        return links, {row["code"]: row["url"] for row in taken}

    async def get(self, code: str) -> Link | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM links WHERE code = $1 AND deleted_at IS NULL", code
        )
        return _link(row) if row else None

    async def entry(self, code: str) -> LinkEntry | None:
        link = await self.get(code)
        return link.entry() if link else None

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str] | None,
        tag: str | None,
        search: str | None = None,
    ) -> list[Link]:
        args: list[Any] = [limit]
        where = ["deleted_at IS NULL"]
        if after is not None:
            args += [after[0], after[1]]
            where.append(f"(created_at, code) < (${len(args) - 1}, ${len(args)})")
        if tag is not None:
            args.append(tag)
            where.append(f"${len(args)} = ANY(tags)")
        if search:
            # A substring of the code or the target, case-insensitive; the
            # pattern's own % and _ are literal.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
            where.append(f"(code ILIKE ${len(args)} OR url ILIKE ${len(args)})")
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM links WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, code DESC LIMIT $1",
            *args,
        )
        return [_link(r) for r in rows]

    async def update(
        self, code: str, changes: dict[str, Any], actor: str | None = None
    ) -> Link | None:
        if "rules" in changes:
            changes = {**changes, "rules": encode_rules(changes["rules"])}
        sets = [
            f"{name} = ${i}" + ("::jsonb" if name == "rules" else "")
            for i, name in enumerate(changes, start=2)
        ]
        sets += ["version = version + 1", "updated_at = now()"]
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                f"UPDATE links SET {', '.join(sets)} WHERE code = $1 AND deleted_at IS NULL "
                f"RETURNING {_COLUMNS}",
                code,
                *changes.values(),
            )
        return _link(row) if row else None

    async def delete(self, code: str, actor: str | None = None) -> tuple[int, datetime] | None:
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                "UPDATE links SET version = version + 1, deleted_at = now(), updated_at = now() "
                "WHERE code = $1 AND deleted_at IS NULL RETURNING version, deleted_at",
                code,
            )
        return (row["version"], row["deleted_at"]) if row else None

    async def history(self, code: str) -> list[Version]:
        """Every version of ``code``, newest first; empty if it never existed."""
        rows = await self._pool.fetch(
            "SELECT code, url, redirect_type, tags, expires_at, max_visits, forward_query, rules, "
            "version, created_at, changed_at AS updated_at, deleted_at, changed_by "
            "FROM link_versions "
            "WHERE code = $1 ORDER BY version DESC",
            code,
        )
        return [
            Version(link=_link(r), deleted_at=r["deleted_at"], changed_by=r["changed_by"])
            for r in rows
        ]
