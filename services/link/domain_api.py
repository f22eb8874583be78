"""The domain API (``/api/domains``, scope ``admin``) as FastAPI routes."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.link import payloads
from services.link.api import Ctx
from services.link.domains import MAX_DOMAINS, Domain, points_at
from services.link.payloads import instant
from shared.contracts import now
from shared.http import bodies
from shared.http.bodies import answer
from shared.http.openapi import route
from shared.http.problems import FieldError, Problem
from shared.urls import host_name

router = APIRouter(prefix="/api/domains")

_REDIRECTS: Final = ("base_url_redirect", "not_found_redirect")
_FOUND: Final = {404: "no domain with that host"}
_BODY: Final = {
    400: "the body is not JSON",
    413: "the body is over 16 KiB",
    422: "a field is invalid (errors names each)",
}


def _unlimited(request: Request) -> None:
    """Domains are managed by a key that sees every domain."""
    if getattr(request.state, "api_key_domains", None) is not None:
        raise Problem(403, "a key limited to domains cannot manage domains")


def _host(value: str) -> str:
    try:
        return host_name(value)
    except ValueError:
        raise Problem(404, "no domain with that host") from None


def _redirects(
    ctx: Ctx, body: dict[str, Any], host: str, errors: list[FieldError]
) -> dict[str, Any]:
    """The redirects ``body`` gives, checked as link targets are, and never
    on ``host`` itself (its visitors would go round in a loop)."""
    out: dict[str, Any] = {}
    for name in _REDIRECTS:
        if name not in body:
            continue
        value = body[name]
        if value is None:
            out[name] = None
            continue
        try:
            target = ctx.fields.target(value)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
            continue
        if points_at(target, host):
            errors.append(FieldError(name, "must not point at this domain (redirect loop)"))
            continue
        out[name] = target
    return out


def _unknown(body: dict[str, Any], allowed: set[str], errors: list[FieldError]) -> None:
    errors.extend(FieldError(n, "unknown or read-only field") for n in body if n not in allowed)


async def _object(request: Request) -> dict[str, Any]:
    body = await bodies.read_json(request)
    if not isinstance(body, dict):
        raise Problem.invalid([FieldError("body", "must be a JSON object")])
    return body


def _render(ctx: Ctx, host: str, domain: Domain | None) -> payloads.Domain:
    return payloads.Domain(
        host=host,
        is_default=host == ctx.domains.default_host,
        base_url_redirect=domain.base_url_redirect if domain else None,
        not_found_redirect=domain.not_found_redirect if domain else None,
        created_at=instant(domain.created_at) if domain else None,
        updated_at=instant(domain.updated_at) if domain else None,
    )


@router.post(
    "",
    **route(
        201,
        payloads.Domain,
        payloads.EXAMPLE_DOMAIN,
        says="the domain added",
        accepts=payloads.NewDomain,
        accepts_example=payloads.EXAMPLE_NEW_DOMAIN,
        problems={
            **_BODY,
            409: f"the host is a domain already (the default one included), or there are "
            f"{MAX_DOMAINS} domains",
        },
    ),
)
async def create_domain(request: Request, ctx: Ctx) -> Response:
    _unlimited(request)
    body = await _object(request)
    errors: list[FieldError] = []
    _unknown(body, {"host", *_REDIRECTS}, errors)
    host = ""
    raw = body.get("host")
    if not isinstance(raw, str):
        errors.append(FieldError("host", "must be a host name such as go.example.com"))
    else:
        try:
            host = host_name(raw)
        except ValueError as exc:
            errors.append(FieldError("host", str(exc)))
    redirects = _redirects(ctx, body, host, errors)
    if errors:
        raise Problem.invalid(errors)
    if host == ctx.domains.default_host:
        raise Problem(
            409, f"{host} is the default domain: PATCH /api/domains/{host} sets its redirects"
        )
    if len(ctx.domains) >= MAX_DOMAINS:
        raise Problem(409, f"there are {MAX_DOMAINS} domains, the most one linkflow serves")
    at = now()
    domain = Domain(host=host, created_at=at, updated_at=at, **redirects)
    if not await ctx.domains.create(domain):
        raise Problem(409, f"{host} is a domain already")
    return answer(_render(ctx, host, domain), 201)


@router.get("", **route(200, payloads.DomainList, payloads.EXAMPLE_DOMAINS, says="every domain"))
async def list_domains(request: Request, ctx: Ctx) -> Response:
    _unlimited(request)
    default = ctx.domains.default_host
    items = [_render(ctx, default, ctx.domains.get(default))]
    items += [_render(ctx, d.host, d) for d in ctx.domains.all() if d.host != default]
    return answer(payloads.DomainList(items=items))


@router.get(
    "/{host}",
    **route(200, payloads.Domain, payloads.EXAMPLE_DOMAIN, says="the domain", problems=_FOUND),
)
async def get_domain(host: str, request: Request, ctx: Ctx) -> Response:
    _unlimited(request)
    host = _host(host)
    domain = ctx.domains.get(host)
    if domain is None and host != ctx.domains.default_host:
        raise Problem(404, f"no domain {host}")
    return answer(_render(ctx, host, domain))


@router.patch(
    "/{host}",
    **route(
        200,
        payloads.Domain,
        payloads.EXAMPLE_DOMAIN,
        says="the domain as changed",
        accepts=payloads.DomainChanges,
        accepts_example=payloads.EXAMPLE_DOMAIN_CHANGES,
        problems={**_BODY, **_FOUND},
    ),
)
async def update_domain(host: str, request: Request, ctx: Ctx) -> Response:
    _unlimited(request)
    host = _host(host)
    body = await _object(request)
    errors: list[FieldError] = []
    _unknown(body, set(_REDIRECTS), errors)
    redirects = _redirects(ctx, body, host, errors)
    if errors:
        raise Problem.invalid(errors)
    default = host == ctx.domains.default_host

    def changed(current: Domain | None) -> Domain | None:
        at = now()
        if current is None:
            # The default domain has a record once its redirects are set.
            return Domain(host=host, created_at=at, updated_at=at, **redirects) if default else None
        return Domain(**{**_fields(current), **redirects, "updated_at": at})

    domain = await ctx.domains.change(host, changed)
    if domain is None:
        raise Problem(404, f"no domain {host}")
    return answer(_render(ctx, host, domain))


def _fields(domain: Domain) -> dict[str, Any]:
    return {name: getattr(domain, name) for name in domain.__struct_fields__}


@router.delete(
    "/{host}",
    **route(
        204,
        says="removed",
        problems={**_FOUND, 409: "the default domain, or a domain that still has links"},
    ),
)
async def delete_domain(host: str, request: Request, ctx: Ctx) -> Response:
    _unlimited(request)
    host = _host(host)
    if host == ctx.domains.default_host:
        raise Problem(409, f"{host} is the default domain (LINKFLOW_PUBLIC_URL's host)")
    if await ctx.store.has_links(host):
        raise Problem(409, f"{host} still has links: delete them first")
    if not await ctx.domains.remove(host):
        raise Problem(404, f"no domain {host}")
    return Response(status_code=204)
