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
from services.link.domains import Domains, short_url
from services.link.events import LinkEvents
from services.link.passwords import Passwords
from services.link.payloads import instant
from services.link.store import CodeTaken, Link, LinkStore
from services.link.validation import CODE_RE, LinkFields, generate_code, tag_value
from shared.contracts import rfc3339
from shared.http import bodies, keys
from shared.http.access import READS, is_api
from shared.http.bodies import answer
from shared.http.openapi import raw, route
from shared.http.problems import FieldError, Problem
from shared.urls import host_name

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
        domains: Domains,
        passwords: Passwords,
    ) -> None:
        self.passwords = passwords
        self.cache = cache
        self.domains = domains
        self.store = store
        self.events = events
        self.fields = fields
        self.public_url = public_url.rstrip("/")
        self.imports = importer.Running()

    def short_url(self, domain: str | None, code: str) -> str:
        return short_url(self.public_url, domain, code)

    def domain(self, value: str | None) -> str | None:
        """A ``?domain=`` parameter: None for the default domain (absent,
        empty or named); a host that cannot be a domain has no link."""
        if not value:
            return None
        try:
            host = host_name(value)
        except ValueError:
            raise Problem.invalid([FieldError("domain", "is not a host name")]) from None
        return None if host == self.domains.default_host else host

    def sees(self, request: Request, domain: str | None) -> bool:
        """Whether the calling key sees ``domain``'s links (a key limited to
        domains sees theirs alone)."""
        allowed: frozenset[str] | None = getattr(request.state, "api_key_domains", None)
        return allowed is None or (domain or self.domains.default_host) in allowed

    def on(self, request: Request, value: str | None, code: str) -> str | None:
        """The domain of the link a ``{code}?domain=`` call names; another
        domain's than the key sees is as unknown to it as no link at all."""
        domain = self.domain(value)
        if not self.sees(request, domain):
            raise Problem.not_found(code)
        return domain

    def render(self, link: Link) -> payloads.Link:
        return payloads.Link(
            code=link.code,
            domain=link.domain,
            url=link.url,
            short_url=self.short_url(link.domain, link.code),
            redirect_type=link.redirect_type,  # type: ignore[arg-type]  # checked when written
            tags=link.tags,
            expires_at=instant(link.expires_at),
            max_visits=link.max_visits,
            forward_query=link.forward_query,
            rules=link.rules,
            destinations=link.destinations,
            preview=link.preview,
            password_protected=link.password_hash is not None,
            version=link.version,
            created_at=rfc3339(link.created_at),
            updated_at=rfc3339(link.updated_at),
        )


OnDomain = Annotated[
    str | None,
    Query(
        max_length=253,
        description="the link's domain (its host); absent: the default domain",
    ),
]


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
    raw = f"{link.created_at.isoformat()}|{link.code}|{link.domain or ''}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """(created_at, code, domain as the table keeps it) of the page's last link."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, code, domain = [*raw.split("|", 2), ""][:3]
        return datetime.fromisoformat(created), code, domain
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
    if not ctx.sees(request, new.domain):
        host = new.domain or ctx.domains.default_host
        raise Problem(403, f"API key {_actor(request)!r} may not make links on {host}")
    digest = None if new.password is None else await ctx.passwords.hash(new.password)
    for _ in range(5):
        try:
            link = await ctx.store.create(
                new.domain,
                generate_code() if new.code is UNSET else new.code,
                new.url,
                new.redirect_type,
                new.tags,
                new.expires_at,
                _actor(request),
                max_visits=new.max_visits,
                forward_query=new.forward_query,
                rules=new.rules,
                destinations=new.destinations,
                preview=new.preview,
                password_hash=digest,
            )
            break
        except CodeTaken:
            if new.code is not UNSET:
                on = f" on {new.domain}" if new.domain else ""
                raise Problem(409, f"code {new.code!r} is already taken{on}") from None
    else:  # five random 7-character codes taken in a row: not chance
        raise Problem(503, "could not find a free code, try again")
    await ctx.events.created(link, request.headers.get("x-request-id"))
    # This gateway redirects at once, without waiting for its own KV watch.
    ctx.cache.apply(link.key, link.entry())
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
    unseen = [row for row in rows if not ctx.sees(request, row.link.domain)]
    if unseen:  # a key limited to domains makes links on theirs alone
        rows = [row for row in rows if ctx.sees(request, row.link.domain)]
        refused += [
            payloads.RowError(row.line, f"domain: this key may not make links on {row.link.domain}")
            for row in unseen
        ]
    request_id = request.headers.get("x-request-id")

    async def announce(link: Link) -> None:
        try:
            await ctx.events.created(link, request_id)
        except Exception as exc:
            # The row is stored: a redirect that misses KV reads the database,
            # and the cache-refresher's reconciliation writes the entry.
            log.warning("import: %s stored but not announced (%s)", link.code, exc)
        ctx.cache.apply(link.key, link.entry())

    outcome = await importer.store(rows, ctx.store, announce, _actor(request))
    return answer(
        payloads.ImportResult(
            imported=len(outcome.imported),
            skipped=outcome.skipped,
            errors=sorted([*refused, *outcome.errors], key=lambda e: e.line),
            links=[
                payloads.ImportedLink(
                    line=line,
                    code=link.code,
                    domain=link.domain,
                    short_url=ctx.short_url(link.domain, link.code),
                )
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
    request: Request,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
    tag: Annotated[str | None, Query(description="only links with this tag")] = None,
    q: Annotated[str | None, Query(max_length=200, description="in the code or URL")] = None,
    domain: Annotated[
        str | None,
        Query(max_length=253, description="only this domain's links (absent: every domain's)"),
    ] = None,
) -> Response:
    after = _decode_cursor(cursor) if cursor else None
    domains = None if domain is None else [ctx.domain(domain)]
    allowed: frozenset[str] | None = getattr(request.state, "api_key_domains", None)
    if allowed is not None:  # a key limited to domains lists theirs alone
        seen = [None if h == ctx.domains.default_host else h for h in sorted(allowed)]
        domains = [d for d in (seen if domains is None else domains) if d in seen]
    if tag is not None:
        try:
            tag = tag_value(tag)
        except ValueError as exc:
            raise Problem.invalid([FieldError("tag", str(exc))]) from None
    links = await ctx.store.page(limit + 1, after, tag, q, domains)
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
async def get_link(code: str, request: Request, ctx: Ctx, domain: OnDomain = None) -> Response:
    _possible(code)
    link = await ctx.store.get(ctx.on(request, domain, code), code)
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
async def link_history(code: str, request: Request, ctx: Ctx, domain: OnDomain = None) -> Response:
    """Every version of the link, newest first: its create, each change and
    its delete (``deleted_at`` set), with the key that made it. A deleted
    link keeps its history, so "where did it point on 3 March" has an answer."""
    _possible(code)
    versions = await ctx.store.history(ctx.on(request, domain, code), code)
    if not versions:
        raise Problem.not_found(code)
    return answer(
        payloads.LinkHistory(
            items=[
                payloads.LinkVersion(
                    **{
                        **msgspec.structs.asdict(ctx.render(v.link)),
                        "password_protected": v.password_protected,
                    },
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
    request: Request,
    ctx: Ctx,
    format: Annotated[  # the SPEC's parameter name, shadowing a builtin
        Literal["svg", "png"], Query(description="svg or png")
    ] = "svg",
    size: Annotated[
        int, Query(ge=qr.MIN_SIZE, le=qr.MAX_SIZE, description="width and height in pixels")
    ] = qr.DEFAULT_SIZE,
    domain: OnDomain = None,
) -> Response:
    """The short URL as a QR code (``format`` svg or png, ``size`` in pixels)."""
    _possible(code)
    on = ctx.on(request, domain, code)
    if await ctx.store.get(on, code) is None:
        raise Problem.not_found(code)
    image = await asyncio.to_thread(qr.render, ctx.short_url(on, code), format, size)
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
async def update_link(code: str, request: Request, ctx: Ctx, domain: OnDomain = None) -> Response:
    _possible(code)
    on = ctx.on(request, domain, code)
    changes = ctx.fields.change(await bodies.read_json(request)).given()
    if "password" in changes:
        password = changes.pop("password")
        changes["password_hash"] = None if password is None else await ctx.passwords.hash(password)
    if not changes:
        link = await ctx.store.get(on, code)
    else:
        link = await ctx.store.update(on, code, changes, _actor(request))
        if link is not None:
            await ctx.events.updated(link, request.headers.get("x-request-id"))
    if link is None:
        raise Problem.not_found(code)
    return answer(ctx.render(link))


@router.delete("/{code}", **route(204, says="deleted", problems=_FOUND))
async def delete_link(code: str, request: Request, ctx: Ctx, domain: OnDomain = None) -> Response:
    _possible(code)
    on = ctx.on(request, domain, code)
    deleted = await ctx.store.delete(on, code, _actor(request))
    if deleted is None:
        raise Problem.not_found(code)
    version, at = deleted
    await ctx.events.deleted(on, code, version, at, request.headers.get("x-request-id"))
    return Response(status_code=204)
