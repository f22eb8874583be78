"""The redirect hot path: a plain ASGI app in front of the FastAPI API.

``GET|HEAD /{code}`` is answered here from the in-process link map, with one
I/O: the click's JetStream publish, awaited before the response so that every
3xx a visitor saw has a stored click. A password-protected link answers its
form instead (no click), and ``POST /{code}`` with the right password takes
the same redirect path (a 303). Everything else goes to the API app.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from time import perf_counter
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from services.link.cache import LinkCache
from services.link.clicks import new_click
from services.link.domains import Domain, Domains, request_host, short_url
from services.link.limits import Limits
from services.link.orphans import Orphans
from services.link.passwords import Busy, Passwords, Tries
from services.link.previews import card
from services.link.publisher import ClickPublisher
from services.link.rules import LinkRules, forward
from services.link.unlock import UnlockKeys, read_password, send_form, set_cookie
from services.link.validation import CODE_RE, RESERVED
from services.link.visitors import Visitors
from shared import metrics
from shared.contracts import (
    BASE_URL,
    HDR_REQUEST_ID,
    INVALID_CODE,
    NOT_FOUND,
    REQUEST_ID_CUT,
    LinkEntry,
    Preview,
)
from shared.geo import Countries
from shared.http.problems import Problem
from shared.useragent import is_preview_fetcher

log = logging.getLogger(__name__)

# ASGI gives header names lower-cased, as bytes.
_REQUEST_ID: Final = HDR_REQUEST_ID.lower().encode()
_COUNTRY_HEADERS: Final = (b"cf-ipcountry", b"x-country-code")
# Links whose compiled rules (and remembered decisions) a gateway keeps.
RULED: Final = 1024
# SPEC ("Limits"): the most of User-Agent, Referer and Accept-Language read,
# cut before anything parses, hashes or caches them. Every cache keyed by
# them is thus bounded in bytes by its bound in entries.
HEADER_CUT: Final = 1024
_NO_STORE: Final = (b"cache-control", b"private, max-age=0")
_OUT_OF_VISITS: Final = "link %r has reached its visit limit"
_NO_COUNTS: Final = "visit counts are not loaded yet; try again in a moment"
_WRONG: Final = "That password is not right. Try again."
_TOO_MANY: Final = "Too many wrong tries. Try again in %d seconds."
_BUSY: Final = "Too many passwords are being checked right now. Try again in a moment."


class Gateway:
    """Wraps the API app; the lifespan attaches the cache and publisher once connected."""

    _cache: LinkCache
    _clicks: ClickPublisher
    _countries: Countries
    _visitors: Visitors
    _limits: Limits
    _domains: Domains
    _unlock_keys: UnlockKeys

    def __init__(
        self,
        api: ASGIApp,
        anonymize_ip: bool,
        orphans: Orphans,
        public_url: str,
        passwords: Passwords,
    ) -> None:
        self._api = api
        self._public_url = public_url
        self._passwords = passwords
        self._tries = Tries()
        self._secure = public_url.startswith("https:")
        self._orphan = orphans.count
        # The API app itself, for what reads its OpenAPI document without
        # serving it (the docs site's build).
        self.api = api
        self._anonymize_ip = anonymize_ip
        self._ready = False
        # Each link's rules compiled for the entry it holds now; recompiled
        # when the map holds a new entry for the code (a new version). Bounded:
        # past RULED links it starts again (deleted links' rules go too).
        self._rules: dict[str, tuple[LinkEntry, LinkRules]] = {}
        self._count = metrics.REDIRECTS.add
        self._observe = metrics.REDIRECT_SECONDS.observe

    def attach(
        self,
        cache: LinkCache,
        clicks: ClickPublisher,
        countries: Countries,
        visitors: Visitors,
        limits: Limits,
        domains: Domains,
        unlock_keys: UnlockKeys,
    ) -> None:
        self._unlock_keys = unlock_keys
        self._cache = cache
        self._clicks = clicks
        self._countries = countries
        self._visitors = visitors
        self._limits = limits
        self._domains = domains
        self._ready = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and self._ready:
            path: str = scope["path"]
            code = path[1:]
            if code and "/" not in code and code not in RESERVED:
                started = perf_counter()
                await self._redirect(scope, send, code)
                self._observe(perf_counter() - started)
                return
            if not code:
                self._orphan(self._on(scope), BASE_URL, path)
                domain = self._serving(scope)
                if domain is not None and domain.base_url_redirect:
                    await self._elsewhere(send, domain.base_url_redirect)
                    return
            elif code.partition("/")[0] not in RESERVED:
                # /a/b: no code and no route of the API app (all under a
                # reserved first segment), which answers it 404.
                self._orphan(self._on(scope), INVALID_CODE, path)
        elif scope["type"] == "http" and scope["method"] == "POST" and self._ready:
            code = scope["path"][1:]
            # A POST to any other link (or path) is the API app's (405, 404).
            if (
                code
                and "/" not in code
                and code not in RESERVED
                and await self._unlock(scope, receive, send, code)
            ):
                return
        await self._api(scope, receive, send)

    def _key(self, scope: Scope, code: str) -> tuple[str | None, str]:
        # The link is (domain, code); its key in the map is the code alone on
        # the default domain, where every request is until a domain is added.
        on = self._on(scope) if self._domains.others else None
        return on, code if on is None else f"{on}/{code}"

    async def _redirect(self, scope: Scope, send: Send, code: str) -> None:
        head = scope["method"] == "HEAD"
        on, key = self._key(scope, code)
        entry = self._cache.get(key) or await self._cache.lookup(key)
        if entry is None or entry.deleted:
            self._orphan(on, NOT_FOUND if CODE_RE.match(code) else INVALID_CODE, scope["path"])
            domain = self._serving(scope)
            if domain is not None and domain.not_found_redirect:
                await self._elsewhere(send, domain.not_found_redirect)
                return
            await self._problem(scope, send, Problem.not_found(code), head)
            return
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            await self._problem(scope, send, Problem(410, f"link {code!r} has expired"), head)
            return
        if entry.password_hash is not None and not self._unlock_keys.admits(
            next((v for k, v in scope["headers"] if k == b"cookie"), b""), key, entry.password_hash
        ):
            self._count(200)
            await send_form(scope, send, 200, short_url(self._public_url, on, code))
            return
        await self._go(scope, send, code, on, key, entry)

    async def _unlock(self, scope: Scope, receive: Receive, send: Send, code: str) -> bool:
        """``POST /{code}`` of a protected link, answered; False: not one."""
        on, key = self._key(scope, code)
        entry = self._cache.get(key) or await self._cache.lookup(key)
        if entry is None or entry.deleted or entry.password_hash is None:
            return False
        url = short_url(self._public_url, on, code)
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            await self._problem(scope, send, Problem(410, f"link {code!r} has expired"), False)
            return True
        client = scope.get("client")
        address = client[0] if client else ""
        wait = self._tries.take(key, address)
        if wait:
            seconds = max(1, math.ceil(wait))
            self._count(429)
            retry = [(b"retry-after", str(seconds).encode())]
            await send_form(scope, send, 429, url, _TOO_MANY % seconds, retry)
            return True
        try:
            password = await read_password(scope, receive)
            right = bool(password) and await self._passwords.verify(entry.password_hash, password)
        except Problem as problem:
            await self._problem(scope, send, problem, False)
            return True
        except Busy:
            self._tries.right(key, address)  # not checked: not a try
            self._count(503)
            await send_form(scope, send, 503, url, _BUSY, [(b"retry-after", b"1")])
            return True
        if not right:
            self._count(401)
            await send_form(scope, send, 401, url, _WRONG)
            return True
        self._tries.right(key, address)
        started = perf_counter()
        cookie = self._unlock_keys.issue(key, entry.password_hash)
        remember = [] if cookie is None else [set_cookie(cookie, code, self._secure)]
        await self._go(scope, send, code, on, key, entry, remember)
        self._observe(perf_counter() - started)
        return True

    async def _go(
        self,
        scope: Scope,
        send: Send,
        code: str,
        on: str | None,
        key: str,
        entry: LinkEntry,
        unlocked: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """The redirect of a found, live link (``unlocked``: after its right
        password, a 303 with these headers)."""
        head = scope["method"] == "HEAD"
        referrer = user_agent = request_id = country = language = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value[:HEADER_CUT].decode("latin-1")
            elif name == b"referer":
                referrer = value[:HEADER_CUT].decode("latin-1")
            elif name == _REQUEST_ID:
                request_id = value[:REQUEST_ID_CUT].decode("latin-1")
            elif name in _COUNTRY_HEADERS and len(value) == 2:
                country = value.decode("latin-1").upper()
            elif name == b"accept-language":
                language = value[:HEADER_CUT].decode("latin-1")
        client = scope.get("client")
        ip = client[0] if client else None
        target, rule = entry.url, None
        if entry.rules:
            held = self._rules.get(key)
            if held is None or held[0] is not entry:
                if len(self._rules) >= RULED:
                    self._rules.clear()
                held = self._rules[key] = (entry, LinkRules(entry.rules))
            rules = held[1]
            rule = rules.choose(
                user_agent, language, country, ip, scope["query_string"], self._countries
            )
            if rule is not None:
                target = rules.url(rule)
        click = new_click(
            code,
            domain=on,
            referrer=referrer,
            user_agent=user_agent,
            ip=ip,
            country=country,
            head=head,
            request_id=request_id,
            anonymize_ip=self._anonymize_ip,
            rule=rule,
            visitors=self._visitors,
            # An A/B split decides only where no rule did.
            destinations=entry.destinations if rule is None else None,
        )
        if click.destination is not None and entry.destinations:
            target = entry.destinations[click.destination].url
        if entry.forward_query:
            target = forward(target, scope["query_string"])
        limit = entry.max_visits
        if limit is not None:
            # Counts not loaded yet (a gateway just started, KV unreachable):
            # a limited link cannot be checked, so it is not redirected.
            if not self._limits.synced.is_set():
                await self._problem(scope, send, Problem(503, _NO_COUNTS), head)
                return
            if not self._limits.admit(key, entry, limit, not click.is_bot):
                await self._problem(scope, send, Problem(410, _OUT_OF_VISITS % code), head)
                return
        try:
            await self._clicks.publish(click)
        except Exception as exc:
            if limit is not None and not click.is_bot:
                self._limits.give_back(key, entry)
            log.error("click for %s not stored: %r", key, exc)
            await self._problem(scope, send, Problem(503, "click could not be recorded"), head)
            return
        if unlocked is None and entry.preview is not None and is_preview_fetcher(user_agent):
            # A chat app drawing the link's card: its page, not the redirect
            # (the click is stored as any, a bot's).
            await self._card(scope, send, entry.preview, target, on, code, click.request_id)
            return
        # 303: the browser GETs the target after its POST.
        status = entry.redirect_type if unlocked is None else 303
        self._count(status)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d, click %s",
                scope["method"],
                code,
                status,
                click.id,
                extra={"request_id": click.request_id},
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"location", target.encode()),
                    # Echoed so that a visitor's request can be traced to its click.
                    (_REQUEST_ID, click.request_id.encode("latin-1")),
                    _NO_STORE,
                    *(unlocked or ()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _card(
        self,
        scope: Scope,
        send: Send,
        preview: Preview,
        target: str,
        on: str | None,
        code: str,
        request_id: str,
    ) -> None:
        body = card(preview, target, short_url(self._public_url, on, code))
        self._count(200)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (_REQUEST_ID, request_id.encode("latin-1")),
                    _NO_STORE,
                    (b"x-robots-tag", b"noindex"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _on(self, scope: Scope) -> str | None:
        """The domain a request is on, by its ``Host``: None for the default."""
        for name, value in scope["headers"]:
            if name == b"host":
                return self._domains.of(request_host(value))
        return None

    def _serving(self, scope: Scope) -> Domain | None:
        """The record of the domain a request is for (by its ``Host``; an
        unregistered host is the default domain), if it has one."""
        for name, value in scope["headers"]:
            if name == b"host":
                return self._domains.serving(request_host(value))
        return self._domains.serving(self._domains.default_host)

    async def _elsewhere(self, send: Send, url: str) -> None:
        """A domain's own redirect for a visit that found no link: a 302
        with no click (the visit is an orphan, counted as one)."""
        self._count(302)
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", url.encode()), _NO_STORE, (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _problem(self, scope: Scope, send: Send, problem: Problem, head: bool) -> None:
        self._count(problem.status)
        await problem.response(head)(scope, _no_receive, send)


async def _no_receive() -> dict[str, object]:
    return {"type": "http.disconnect"}
