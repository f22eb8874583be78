"""``POST /api/links/import``: many links from one CSV body.

The header names the columns: ``url`` is required, ``code``,
``redirect_type``, ``expires_at`` and ``tags`` (comma-separated inside the
cell, so quoted) are optional. Each row goes through the same checks as a
``POST /api/links`` body; a refused row is reported with its line and
reason while the others are imported. A row whose code already holds the
same URL is skipped, so running an import again changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import msgspec

from services.link.payloads import NewLink, RowError
from services.link.store import Link, LinkStore
from services.link.validation import LinkFields, generate_code
from shared.http.problems import Problem

# What a create does after its insert: KV, links.created, the local map.
Announce = Callable[[Link], Awaitable[None]]

COLUMNS: Final = ("url", "code", "domain", "redirect_type", "expires_at", "tags")
# Far over the API's 16 KiB: 10,000 links of ~100 bytes fit ten times over.
MAX_IMPORT: Final = 10 * 1024 * 1024
# The longest a CSV may take to arrive (10 MiB at 200 KB/s): past it, 408.
READ_TIMEOUT: Final = 60.0
# Rows per import: bounds what one call (one write of the rate limit) may
# cost; a bigger file is imported in parts.
MAX_ROWS: Final = 10_000


# Imports one gateway runs at once (SPEC, "Limits"): each holds up to
# MAX_IMPORT of body and a thread parsing it, so a third is refused, not queued.
MAX_RUNNING: Final = 2
# Seconds a refused import is told to wait: about what a 10,000-row one takes.
RETRY_AFTER: Final = 5


class Running:
    """The imports this gateway runs now (one per gateway, held by its routes)."""

    def __init__(self, most: int = MAX_RUNNING) -> None:
        self._most = most
        self._now = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Room for one import while the block runs, or a 429 at once."""
        if self._now >= self._most:
            raise Problem(
                429,
                f"{self._most} imports are running on this gateway: try again when one is done",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        self._now += 1
        try:
            yield
        finally:
            self._now -= 1


class Row(msgspec.Struct, frozen=True):
    line: int
    link: NewLink


def _cells(raw: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the JSON body a create would have: empty cells omitted."""
    body: dict[str, Any] = {}
    for name, value in raw.items():
        text = value.strip()
        if not text:
            continue
        if name == "redirect_type":
            # Not int() on any digits: "²" is a digit to Python, and a
            # 5,000-digit number would be an error of int()'s own.
            body[name] = int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else text
        elif name == "tags":
            body[name] = [t.strip() for t in text.split(",") if t.strip()]
        else:
            body[name] = text
    return body


def _rows(text: str) -> Iterator[tuple[int, dict[str, str], int]]:
    """(first line, cells by column, cells beyond the header) for each non-blank row."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = [name.strip() for name in next(reader, [])]
    if "url" not in header:
        raise Problem(400, "not a link CSV: the first line must be a header with a url column")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise Problem(
            400, f"unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)}; url is required)"
        )
    if len(set(header)) != len(header):
        raise Problem(400, "a column is named twice in the header")
    line = reader.line_num + 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            yield line, dict(zip(header, cells, strict=False)), max(len(cells) - len(header), 0)
        line = reader.line_num + 1


def parse(body: bytes, fields: LinkFields) -> tuple[list[Row], list[RowError]]:
    """Every valid row and every refused one; a body that is no CSV is a 400.
    CPU-bound (tens of milliseconds for 10,000 rows): run it off the event loop."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Problem(400, "not a CSV file: the body is not UTF-8 text") from None
    if "\0" in text:
        raise Problem(400, "not a CSV file: the body holds NUL bytes")
    rows: list[Row] = []
    errors: list[RowError] = []
    codes: dict[tuple[str | None, str], int] = {}
    try:
        for line, raw, extra in _rows(text):
            if len(rows) + len(errors) >= MAX_ROWS:
                raise Problem(413, f"more than {MAX_ROWS:,} rows: import the file in parts")
            if extra:
                errors.append(RowError(line, f"{extra} cell(s) more than the header names"))
                continue
            try:
                checked = fields.create(_cells(raw))
            except Problem as problem:
                errors.append(RowError(line, problem.detail))
                continue
            code = checked.code
            if code is not msgspec.UNSET:
                if (checked.domain, code) in codes:
                    at = codes[checked.domain, code]
                    errors.append(RowError(line, f"code {code!r} is already on line {at}"))
                    continue
                codes[checked.domain, code] = line
            rows.append(Row(line, checked))
    except csv.Error as exc:
        raise Problem(400, f"not a CSV file: {exc}") from None
    return rows, errors


class Outcome(msgspec.Struct, kw_only=True):
    imported: list[tuple[int, Link]] = msgspec.field(default_factory=list)
    skipped: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)


CHUNK: Final = 1000
# Links published (KV + links.created) at once after each chunk's insert.
CONCURRENCY: Final = 64
GENERATE_ATTEMPTS: Final = 5


async def store(
    rows: list[Row], links: LinkStore, announce: Announce, actor: str | None = None
) -> Outcome:
    """Insert the rows a chunk at a time, then announce each new link as a
    create does. A row is written whole or not at all: one INSERT holds it."""
    out = Outcome()
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        pending = {row.line: row for row in chunk}
        chosen: dict[int, str] = {}
        chunk_made: list[Link] = []
        for _ in range(GENERATE_ATTEMPTS):
            if not pending:
                break
            for line, row in pending.items():
                code = row.link.code
                chosen[line] = generate_code() if code is msgspec.UNSET else code
            by_key = {(row.link.domain, chosen[line]): row for line, row in pending.items()}
            made, taken = await links.create_many(
                [
                    (
                        domain,
                        code,
                        row.link.url,
                        row.link.redirect_type,
                        row.link.tags,
                        row.link.expires_at,
                    )
                    for (domain, code), row in by_key.items()
                ],
                actor,
            )
            out.imported += [(by_key[link.domain, link.code].line, link) for link in made]
            chunk_made += made
            retry: dict[int, Row] = {}
            for (domain, code), url in taken.items():
                row = by_key[domain, code]
                if row.link.code is msgspec.UNSET:
                    retry[row.line] = row  # a generated code that happened to be taken
                elif url == row.link.url:
                    out.skipped += 1  # imported before: nothing to do
                else:
                    out.errors.append(RowError(row.line, f"code {code!r} is already taken"))
            pending = retry
        for line in pending:
            out.errors.append(RowError(line, "could not find a free code, try again"))
        await _announce_all(chunk_made, announce)
    out.imported.sort(key=lambda pair: pair[0])
    out.errors.sort(key=lambda e: e.line)
    return out


async def _announce_all(made: list[Link], announce: Announce) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(link: Link) -> None:
        async with limit:
            await announce(link)

    await asyncio.gather(*(one(link) for link in made))
