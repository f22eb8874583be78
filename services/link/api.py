"""The link API (``/api/links``) as FastAPI routes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.link import importer, qr
from services.link.cache import LinkCache
from services.link.events import LinkEvents
from services.link.store import CodeTaken, Link, LinkStore
from services.link.validation import CODE_RE, LinkFields, generate_code, tag_value
from shared.contracts import rfc3339
from shared.http import bodies, keys
from shared.http.access import READS, is_api
from shared.http.openapi import problem, problems
from shared.http.problems import FieldError, Problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/links")


def policy(method: str, path: str) -> str | None:
    """The scope a gateway call needs (SPEC, "Access"); None: public."""
    if not is_api(path):
        return None
    if path == "/api/links" or path.startswith("/api/links/"):
        return keys.LINKS_READ if method in READS else keys.LINKS_WRITE
    return keys.ADMIN


class Deps:
    """What the routes need, built once by the lifespan."""

    def __init__(
        self,
        store: LinkStore,
        events: LinkEvents,
        fields: LinkFields,
        public_url: str,
        cache: LinkCache,
    ) -> None:
        self.cache = cache
        self.store = store
        self.events = events
        self.fields = fields
        self.public_url = public_url.rstrip("/")
        self.imports = importer.Running()

    def render(self, link: Link) -> dict[str, Any]:
        return {
            "code": link.code,
            "url": link.url,
            "short_url": f"{self.public_url}/{link.code}",
            "redirect_type": link.redirect_type,
            "tags": link.tags,
            "expires_at": rfc3339(link.expires_at) if link.expires_at else None,
            "max_visits": link.max_visits,
            "forward_query": link.forward_query,
            "rules": msgspec.to_builtins(link.rules),
            "version": link.version,
            "created_at": rfc3339(link.created_at),
            "updated_at": rfc3339(link.updated_at),
        }


def deps(request: Request) -> Deps:
    d: Deps = request.state.deps
    return d


Ctx = Annotated[Deps, Depends(deps)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def _actor(request: Request) -> str | None:
    """The name of the API key making the call (None with LINKFLOW_AUTH=off)."""
    name: str | None = getattr(request.state, "api_key", None)
    return name


def _possible(code: str) -> None:
    """A code no link can have is not looked up (nor passed to PostgreSQL,
    which refuses a NUL in text)."""
    if not CODE_RE.match(code):
        raise Problem.not_found(code)


def _encode_cursor(link: Link) -> str:
    raw = f"{link.created_at.isoformat()}|{link.code}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, code = raw.split("|", 1)
        return datetime.fromisoformat(created), code
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem.invalid([FieldError("cursor", "is not a valid cursor")]) from None


@router.post("", status_code=201, responses=problems(400, 409, 413, 422, 503))
async def create_link(request: Request, ctx: Ctx) -> Response:
    fields = ctx.fields.check(await bodies.read_json(request), creating=True)
    code = fields.get("code")
    for _ in range(5):
        try:
            link = await ctx.store.create(
                code or generate_code(),
                fields["url"],
                fields.get("redirect_type", 302),
                fields.get("tags", []),
                fields.get("expires_at"),
                _actor(request),
                max_visits=fields.get("max_visits"),
                forward_query=fields.get("forward_query", False),
                rules=fields.get("rules", []),
            )
            break
        except CodeTaken:
            if code is not None:
                raise Problem(409, f"code {code!r} is already taken") from None
    else:  # five random 7-character codes taken in a row: not chance
        raise Problem(503, "could not find a free code, try again")
    await ctx.events.created(link, request.headers.get("x-request-id"))
    # This gateway redirects at once, without waiting for its own KV watch.
    ctx.cache.apply(link.code, link.entry())
    return _json(ctx.render(link), 201)


@router.post(
    "/import",
    responses={
        **problems(400, 408, 413),
        **problem(
            429,
            f"{importer.MAX_RUNNING} imports are running on this gateway, or writes by "
            "this key or failed authentications from this address are over their rate "
            "(Retry-After)",
        ),
    },
)
async def import_links(request: Request, ctx: Ctx) -> Response:
    # Refused before the body is read: a refused import costs nothing.
    with ctx.imports.slot():
        return await _import(request, ctx)


async def _import(request: Request, ctx: Ctx) -> Response:
    # Bounded in time too: a body sent a byte at a time would otherwise hold
    # one of the few import slots for as long as the sender likes.
    try:
        async with asyncio.timeout(importer.READ_TIMEOUT):
            body = await bodies.read(request, importer.MAX_IMPORT)
    except TimeoutError:
        raise Problem(408, f"the CSV did not arrive within {importer.READ_TIMEOUT:.0f} s") from None
    # In a thread: redirects keep being answered while a big file is checked.
    rows, refused = await asyncio.to_thread(importer.parse, body, ctx.fields)
    request_id = request.headers.get("x-request-id")

    async def announce(link: Link) -> None:
        try:
            await ctx.events.created(link, request_id)
        except Exception as exc:
            # The row is stored: a redirect that misses KV reads the database,
            # and the cache-refresher's reconciliation writes the entry.
            log.warning("import: %s stored but not announced (%s)", link.code, exc)
        ctx.cache.apply(link.code, link.entry())

    outcome = await importer.store(rows, ctx.store, announce, _actor(request))
    errors = sorted([*refused, *outcome.errors], key=lambda e: e.line)
    return _json(
        {
            "imported": len(outcome.imported),
            "skipped": outcome.skipped,
            "errors": [msgspec.structs.asdict(e) for e in errors],
            "links": [
                {"line": line, "code": link.code, "short_url": f"{ctx.public_url}/{link.code}"}
                for line, link in outcome.imported
            ],
        }
    )


@router.get("", responses=problems(422))
async def list_links(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    after = _decode_cursor(cursor) if cursor else None
    if tag is not None:
        try:
            tag = tag_value(tag)
        except ValueError as exc:
            raise Problem.invalid([FieldError("tag", str(exc))]) from None
    links = await ctx.store.page(limit + 1, after, tag, q)
    more = len(links) > limit
    links = links[:limit]
    return _json(
        {
            "items": [ctx.render(link) for link in links],
            "next_cursor": _encode_cursor(links[-1]) if more else None,
        }
    )


@router.get("/{code}", responses=problems(404))
async def get_link(code: str, ctx: Ctx) -> Response:
    _possible(code)
    link = await ctx.store.get(code)
    if link is None:
        raise Problem.not_found(code)
    return _json(ctx.render(link))


@router.get("/{code}/history", responses=problems(404))
async def link_history(code: str, ctx: Ctx) -> Response:
    """Every version of the link, newest first: its create, each change and
    its delete (``deleted_at`` set), with the key that made it. A deleted
    link keeps its history, so "where did it point on 3 March" has an answer."""
    _possible(code)
    versions = await ctx.store.history(code)
    if not versions:
        raise Problem.not_found(code)
    return _json(
        {
            "items": [
                ctx.render(v.link)
                | {
                    "deleted_at": rfc3339(v.deleted_at) if v.deleted_at else None,
                    "changed_by": v.changed_by,
                }
                for v in versions
            ]
        }
    )


@router.get(
    "/{code}/qr",
    responses=problems(404, 422)
    | {200: {"content": {media: {} for media in qr.FORMATS.values()}, "description": "image"}},
)
async def link_qr(
    code: str,
    ctx: Ctx,
    format: str = "svg",  # the SPEC's parameter name, shadowing a builtin
    size: int = qr.DEFAULT_SIZE,
) -> Response:
    """The short URL as a QR code (``format`` svg or png, ``size`` in pixels)."""
    errors = []
    if format not in qr.FORMATS:
        errors.append(FieldError("format", "must be 'svg' or 'png'"))
    if not qr.MIN_SIZE <= size <= qr.MAX_SIZE:
        errors.append(FieldError("size", f"must be {qr.MIN_SIZE} to {qr.MAX_SIZE} pixels"))
    if errors:
        raise Problem.invalid(errors)
    _possible(code)
    if await ctx.store.get(code) is None:
        raise Problem.not_found(code)
    image = await asyncio.to_thread(qr.render, f"{ctx.public_url}/{code}", format, size)
    # The image follows the code, not the target: it never changes.
    return Response(
        image,
        media_type=qr.FORMATS[format],
        headers={"cache-control": "private, max-age=86400"},
    )


@router.patch("/{code}", responses=problems(400, 404, 413, 422))
async def update_link(code: str, request: Request, ctx: Ctx) -> Response:
    _possible(code)
    changes = ctx.fields.check(await bodies.read_json(request), creating=False)
    if not changes:
        link = await ctx.store.get(code)
    else:
        link = await ctx.store.update(code, changes, _actor(request))
        if link is not None:
            await ctx.events.updated(link, request.headers.get("x-request-id"))
    if link is None:
        raise Problem.not_found(code)
    return _json(ctx.render(link))


@router.delete("/{code}", status_code=204, responses=problems(404))
async def delete_link(code: str, request: Request, ctx: Ctx) -> Response:
    _possible(code)
    deleted = await ctx.store.delete(code, _actor(request))
    if deleted is None:
        raise Problem.not_found(code)
    version, at = deleted
    await ctx.events.deleted(code, version, at, request.headers.get("x-request-id"))
    return Response(status_code=204)
