"""The link API (``/api/links``) as FastAPI routes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from msgspec import UNSET

from services.link import importer, payloads, qr
from services.link.cache import LinkCache
from services.link.events import LinkEvents
from services.link.payloads import instant
from services.link.store import CodeTaken, Link, LinkStore
from services.link.validation import CODE_RE, LinkFields, generate_code, tag_value
from shared.contracts import rfc3339
from shared.http import bodies, keys
from shared.http.access import READS, is_api
from shared.http.bodies import answer
from shared.http.openapi import raw, route
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

    def short_url(self, code: str) -> str:
        return f"{self.public_url}/{code}"

    def render(self, link: Link) -> payloads.Link:
        return payloads.Link(
            code=link.code,
            url=link.url,
            short_url=self.short_url(link.code),
            redirect_type=link.redirect_type,  # type: ignore[arg-type]  # checked when written
            tags=link.tags,
            expires_at=instant(link.expires_at),
            max_visits=link.max_visits,
            forward_query=link.forward_query,
            rules=link.rules,
            version=link.version,
            created_at=rfc3339(link.created_at),
            updated_at=rfc3339(link.updated_at),
        )


def deps(request: Request) -> Deps:
    d: Deps = request.state.deps
    return d


Ctx = Annotated[Deps, Depends(deps)]


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


_FOUND: Final = {404: "no link with that code"}
# A created link's code, fed to the calls that read it (stateful clients and
# schemathesis follow these).
_CREATED_LINKS: Final = {
    name: {"operationId": name, "parameters": {"code": "$response.body#/code"}}
    for name in ("get_link", "link_history", "update_link")
}


@router.post(
    "",
    **route(
        201,
        payloads.Link,
        payloads.EXAMPLE_LINK,
        says="the link created",
        accepts=payloads.NewLink,
        accepts_example=payloads.EXAMPLE_NEW,
        problems={
            400: "the body is not JSON",
            409: "the code is taken",
            413: "the body is over 16 KiB",
            422: "a field is invalid (errors names each)",
            503: "no free code found: try again",
        },
        links=_CREATED_LINKS,
    ),
)
async def create_link(request: Request, ctx: Ctx) -> Response:
    new = ctx.fields.create(await bodies.read_json(request))
    for _ in range(5):
        try:
            link = await ctx.store.create(
                generate_code() if new.code is UNSET else new.code,
                new.url,
                new.redirect_type,
                new.tags,
                new.expires_at,
                _actor(request),
                max_visits=new.max_visits,
                forward_query=new.forward_query,
                rules=new.rules,
            )
            break
        except CodeTaken:
            if new.code is not UNSET:
                raise Problem(409, f"code {new.code!r} is already taken") from None
    else:  # five random 7-character codes taken in a row: not chance
        raise Problem(503, "could not find a free code, try again")
    await ctx.events.created(link, request.headers.get("x-request-id"))
    # This gateway redirects at once, without waiting for its own KV watch.
    ctx.cache.apply(link.code, link.entry())
    return answer(ctx.render(link), 201)


@router.post(
    "/import",
    **route(
        200,
        payloads.ImportResult,
        payloads.EXAMPLE_IMPORT,
        says="what the import did, row by row",
        accepts_media={
            "text/csv": {
                "schema": raw("text/csv"),
                "example": "url,code,tags\nhttps://example.com/launch,launch,campaign\n",
            }
        },
        problems={
            400: "the body is not a link CSV (UTF-8, a header with a url column)",
            408: f"the CSV did not arrive within {importer.READ_TIMEOUT:.0f} s",
            413: f"the CSV is over {importer.MAX_IMPORT // 2**20} MiB or "
            f"{importer.MAX_ROWS:,} rows",
            429: f"{importer.MAX_RUNNING} imports are running on this gateway, or writes by "
            "this key or failed authentications from this address are over their rate "
            "(Retry-After)",
        },
    ),
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
    return answer(
        payloads.ImportResult(
            imported=len(outcome.imported),
            skipped=outcome.skipped,
            errors=sorted([*refused, *outcome.errors], key=lambda e: e.line),
            links=[
                payloads.ImportedLink(line=line, code=link.code, short_url=ctx.short_url(link.code))
                for line, link in outcome.imported
            ],
        )
    )


@router.get(
    "",
    **route(
        200,
        payloads.LinkPage,
        payloads.EXAMPLE_PAGE,
        says="links, newest first",
        problems={422: "a parameter is invalid (errors names each)"},
    ),
)
async def list_links(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
    tag: Annotated[str | None, Query(description="only links with this tag")] = None,
    q: Annotated[str | None, Query(max_length=200, description="in the code or URL")] = None,
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
    return answer(
        payloads.LinkPage(
            items=[ctx.render(link) for link in links],
            next_cursor=_encode_cursor(links[-1]) if more else None,
        )
    )


@router.get(
    "/{code}",
    **route(200, payloads.Link, payloads.EXAMPLE_LINK, says="the link", problems=_FOUND),
)
async def get_link(code: str, ctx: Ctx) -> Response:
    _possible(code)
    link = await ctx.store.get(code)
    if link is None:
        raise Problem.not_found(code)
    return answer(ctx.render(link))


@router.get(
    "/{code}/history",
    **route(
        200,
        payloads.LinkHistory,
        payloads.EXAMPLE_HISTORY,
        says="every version of the link, newest first",
        problems=_FOUND,
    ),
)
async def link_history(code: str, ctx: Ctx) -> Response:
    """Every version of the link, newest first: its create, each change and
    its delete (``deleted_at`` set), with the key that made it. A deleted
    link keeps its history, so "where did it point on 3 March" has an answer."""
    _possible(code)
    versions = await ctx.store.history(code)
    if not versions:
        raise Problem.not_found(code)
    return answer(
        payloads.LinkHistory(
            items=[
                payloads.LinkVersion(
                    **msgspec.structs.asdict(ctx.render(v.link)),
                    deleted_at=instant(v.deleted_at),
                    changed_by=v.changed_by,
                )
                for v in versions
            ]
        )
    )


@router.get(
    "/{code}/qr",
    **route(
        200,
        media=dict.fromkeys(qr.FORMATS.values(), "the short URL as a QR code"),
        problems={**_FOUND, 422: "format or size is invalid (errors names each)"},
    ),
)
async def link_qr(
    code: str,
    ctx: Ctx,
    format: Annotated[  # the SPEC's parameter name, shadowing a builtin
        Literal["svg", "png"], Query(description="svg or png")
    ] = "svg",
    size: Annotated[
        int, Query(ge=qr.MIN_SIZE, le=qr.MAX_SIZE, description="width and height in pixels")
    ] = qr.DEFAULT_SIZE,
) -> Response:
    """The short URL as a QR code (``format`` svg or png, ``size`` in pixels)."""
    _possible(code)
    if await ctx.store.get(code) is None:
        raise Problem.not_found(code)
    image = await asyncio.to_thread(qr.render, ctx.short_url(code), format, size)
    # The image follows the code, not the target: it never changes.
    return Response(
        image,
        media_type=qr.FORMATS[format],
        headers={"cache-control": "private, max-age=86400"},
    )


@router.patch(
    "/{code}",
    **route(
        200,
        payloads.Link,
        payloads.EXAMPLE_LINK,
        says="the link as changed (its version one higher if anything changed)",
        accepts=payloads.LinkChanges,
        accepts_example=payloads.EXAMPLE_CHANGES,
        problems={
            400: "the body is not JSON",
            **_FOUND,
            413: "the body is over 16 KiB",
            422: "a field is invalid (errors names each)",
        },
    ),
)
async def update_link(code: str, request: Request, ctx: Ctx) -> Response:
    _possible(code)
    changes = ctx.fields.change(await bodies.read_json(request)).given()
    if not changes:
        link = await ctx.store.get(code)
    else:
        link = await ctx.store.update(code, changes, _actor(request))
        if link is not None:
            await ctx.events.updated(link, request.headers.get("x-request-id"))
    if link is None:
        raise Problem.not_found(code)
    return answer(ctx.render(link))


@router.delete("/{code}", **route(204, says="deleted", problems=_FOUND))
async def delete_link(code: str, request: Request, ctx: Ctx) -> Response:
    _possible(code)
    deleted = await ctx.store.delete(code, _actor(request))
    if deleted is None:
        raise Problem.not_found(code)
    version, at = deleted
    await ctx.events.deleted(code, version, at, request.headers.get("x-request-id"))
    return Response(status_code=204)
