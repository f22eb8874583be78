"""The ``links`` table: the gateway is its only writer.

A link is ``(domain, code)``: ``domain`` None is the default domain, kept
as ``''`` in the table (a key column cannot be null)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from shared.contracts import (
    Destination,
    LinkEntry,
    Preview,
    Rule,
    decode_destinations,
    decode_preview,
    decode_rules,
    link_key,
    millis,
)

_COLUMNS: Final = (
    "domain, code, url, redirect_type, tags, expires_at, max_visits, forward_query, rules, "
    "destinations, preview, password_hash, "
    "version, created_at, updated_at"
)
# A code whose link was deleted may be taken again; its version goes on from
# the deleted one so that readers never see a version repeat. A live code
# conflicts: no row comes back.
_REVIVE: Final = """ON CONFLICT (domain, code) DO UPDATE SET
    url = EXCLUDED.url, redirect_type = EXCLUDED.redirect_type,
    tags = EXCLUDED.tags, expires_at = EXCLUDED.expires_at,
    max_visits = EXCLUDED.max_visits, forward_query = EXCLUDED.forward_query,
    rules = EXCLUDED.rules, destinations = EXCLUDED.destinations, preview = EXCLUDED.preview,
    password_hash = EXCLUDED.password_hash,
    version = links.version + 1, created_at = now(), updated_at = now(),
    deleted_at = NULL
WHERE links.deleted_at IS NOT NULL"""


def column(domain: str | None) -> str:
    """A domain as the table keeps it."""
    return domain or ""


# Columns written as JSON text and cast.
_JSON: Final = frozenset({"rules", "destinations", "preview"})


class Link(msgspec.Struct, kw_only=True, frozen=True):
    domain: str | None = None
    code: str
    url: str
    redirect_type: int
    tags: list[str]
    expires_at: datetime | None
    max_visits: int | None = None
    forward_query: bool = False
    rules: list[Rule] = []
    destinations: list[Destination] | None = None
    preview: Preview | None = None
    # Its password's Argon2id hash: for the KV entry alone, never answered.
    password_hash: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> str:
        """Its key in KV ``links`` (and the gateway's map)."""
        return link_key(self.domain, self.code)

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
            destinations=self.destinations,
            preview=self.preview,
            password_hash=self.password_hash,
        )


def _link(row: asyncpg.Record) -> Link:
    return Link(
        domain=row["domain"] or None,
        code=row["code"],
        url=row["url"],
        redirect_type=row["redirect_type"],
        tags=list(row["tags"]),
        expires_at=row["expires_at"],
        max_visits=row["max_visits"],
        forward_query=row["forward_query"],
        rules=decode_rules(row["rules"]),
        destinations=decode_destinations(row["destinations"]),
        preview=decode_preview(row["preview"]),
        password_hash=row["password_hash"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def encode_rules(rules: list[Rule]) -> str:
    return msgspec.json.encode(rules).decode()


def encode_json(value: object | None) -> str | None:
    """A jsonb column's text; None: SQL null."""
    return None if value is None else msgspec.json.encode(value).decode()


class Version(msgspec.Struct, kw_only=True, frozen=True):
    """A link as it was after one change, and who made it."""

    link: Link
    deleted_at: datetime | None
    changed_by: str | None
    password_protected: bool = False


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
        domain: str | None,
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
        destinations: list[Destination] | None = None,
        preview: Preview | None = None,
        password_hash: str | None = None,
    ) -> Link:
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                f"""
                INSERT INTO links (domain, code, url, redirect_type, tags, expires_at,
                                   max_visits, forward_query, rules, destinations, preview,
                                   password_hash)
                VALUES ($9, $1, $2, $3, $4, $5, $6, $7, $8::jsonb, $10::jsonb, $11::jsonb, $12)
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
                column(domain),
                encode_json(destinations),
                encode_json(preview),
                password_hash,
            )
        if row is None:
            raise CodeTaken(code)
        return _link(row)

    async def create_many(
        self,
        rows: list[tuple[str | None, str, str, int, list[str], datetime | None]],
        actor: str | None = None,
    ) -> tuple[list[Link], dict[tuple[str | None, str], str]]:
        """(domain, code, url, redirect_type, tags, expires_at) rows in one
        statement, each as :meth:`create` would: the links made, and for every
        (domain, code) that was taken, the URL it holds. Each must be distinct."""
        async with self._as(actor) as conn:
            made = await conn.fetch(
                f"""
                INSERT INTO links (domain, code, url, redirect_type, tags, expires_at)
                SELECT r.domain, r.code, r.url, r.redirect_type,
                       ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.expires_at
                FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[],
                            $6::timestamptz[])
                     AS r(domain, code, url, redirect_type, tags, expires_at)
                {_REVIVE}
                RETURNING {_COLUMNS}
                """,
                [column(r[0]) for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                # A text[] per row would flatten in unnest: each travels as JSON.
                [msgspec.json.encode(r[4]).decode() for r in rows],
                [r[5] for r in rows],
            )
            links = [_link(row) for row in made]
            made_keys = {(link.domain, link.code) for link in links}
            rest = [r for r in rows if (r[0], r[1]) not in made_keys]
            taken = await conn.fetch(
                "SELECT l.domain, l.code, l.url FROM links l "
                "JOIN unnest($1::text[], $2::text[]) AS r(domain, code) "
                "ON l.domain = r.domain AND l.code = r.code WHERE l.deleted_at IS NULL",
                [column(r[0]) for r in rest],
                [r[1] for r in rest],
            )
        return links, {(row["domain"] or None, row["code"]): row["url"] for row in taken}

    async def get(self, domain: str | None, code: str) -> Link | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM links WHERE domain = $1 AND code = $2 AND deleted_at IS NULL",
            column(domain),
            code,
        )
        return _link(row) if row else None

    async def entry(self, domain: str | None, code: str) -> LinkEntry | None:
        link = await self.get(domain, code)
        return link.entry() if link else None

    async def has_links(self, domain: str) -> bool:
        """Whether ``domain`` has a link that is not deleted."""
        found: bool = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM links WHERE domain = $1 AND deleted_at IS NULL)", domain
        )
        return found

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str, str] | None,
        tag: str | None,
        search: str | None = None,
        domains: list[str | None] | None = None,
    ) -> list[Link]:
        """Live links, newest first; ``domains``: only theirs (None: every
        domain's)."""
        args: list[Any] = [limit]
        where = ["deleted_at IS NULL"]
        if domains is not None:
            args.append([column(d) for d in domains])
            where.append(f"domain = ANY(${len(args)})")
        if after is not None:
            args += list(after)
            n = len(args)
            where.append(f"(created_at, code, domain) < (${n - 2}, ${n - 1}, ${n})")
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
            "ORDER BY created_at DESC, code DESC, domain DESC LIMIT $1",
            *args,
        )
        return [_link(r) for r in rows]

    async def update(
        self, domain: str | None, code: str, changes: dict[str, Any], actor: str | None = None
    ) -> Link | None:
        if "rules" in changes:
            changes = {**changes, "rules": encode_rules(changes["rules"])}
        for name in ("destinations", "preview"):
            if name in changes:
                changes = {**changes, name: encode_json(changes[name])}
        sets = [
            f"{name} = ${i}" + ("::jsonb" if name in _JSON else "")
            for i, name in enumerate(changes, start=3)
        ]
        sets += ["version = version + 1", "updated_at = now()"]
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                f"UPDATE links SET {', '.join(sets)} "
                "WHERE domain = $1 AND code = $2 AND deleted_at IS NULL "
                f"RETURNING {_COLUMNS}",
                column(domain),
                code,
                *changes.values(),
            )
        return _link(row) if row else None

    async def delete(
        self, domain: str | None, code: str, actor: str | None = None
    ) -> tuple[int, datetime] | None:
        async with self._as(actor) as conn:
            row = await conn.fetchrow(
                "UPDATE links SET version = version + 1, deleted_at = now(), updated_at = now() "
                "WHERE domain = $1 AND code = $2 AND deleted_at IS NULL "
                "RETURNING version, deleted_at",
                column(domain),
                code,
            )
        return (row["version"], row["deleted_at"]) if row else None

    async def history(self, domain: str | None, code: str) -> list[Version]:
        """Every version of the link, newest first; empty if it never existed."""
        rows = await self._pool.fetch(
            "SELECT domain, code, url, redirect_type, tags, expires_at, max_visits, forward_query, "
            "rules, destinations, preview, NULL AS password_hash, password_protected, "
            "version, created_at, changed_at AS updated_at, deleted_at, changed_by "
            "FROM link_versions "
            "WHERE domain = $1 AND code = $2 ORDER BY version DESC",
            column(domain),
            code,
        )
        return [
            Version(
                link=_link(r),
                deleted_at=r["deleted_at"],
                changed_by=r["changed_by"],
                password_protected=r["password_protected"],
            )
            for r in rows
        ]
