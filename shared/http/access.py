"""Who may call an HTTP service's ``/api``: the bearer-key check, scopes and
rate limits, as ASGI middleware in front of the service's routes.

Each service states its rules as one function, ``(method, path) -> scope or
None`` (None: public), which both this guard and the OpenAPI document read.
The guard answers 401 / 403 / 429 as problem+json before a route runs, and
hands the key's name to the route in ``request.state.api_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Final

from nats.js import JetStreamContext
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import metrics
from shared.http import docs, keys
from shared.http.keys import KeyRing
from shared.http.problems import Problem
from shared.settings import Common, Rate

log = logging.getLogger(__name__)

Policy = Callable[[str, str], str | None]
# The OpenAPI documents and their viewer are public (SPEC, "Access").
PUBLIC_PATHS: Final = frozenset({"/api/openapi.json", *docs.PATHS})
READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
KEYS_WAIT: Final = 5.0
_BEARER = re.compile(r"^Bearer +(\S+) *$", re.IGNORECASE)


def is_api(path: str) -> bool:
    """Under ``/api`` and not one of the public documents."""
    return (path == "/api" or path.startswith("/api/")) and path not in PUBLIC_PATHS


class RateLimit:
    """A token bucket per client: ``rate`` per second, at most ``burst`` at once."""

    MAX_CLIENTS: Final = 100_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, at)

    def _tokens(self, who: str, at: float) -> float:
        tokens, then = self._buckets.get(who, (self.burst, at))
        return min(self.burst, tokens + (at - then) * self.rate)

    def take(self, who: str) -> float:
        """Spend a token if there is one: 0, else the seconds until there is."""
        at = time.monotonic()
        tokens = self._tokens(who, at)
        if tokens < 1:
            return (1 - tokens) / self.rate
        if len(self._buckets) >= self.MAX_CLIENTS:
            # Clients with a full bucket need no memory: forget them first.
            self._buckets = {
                k: v for k, v in self._buckets.items() if self._tokens(k, at) < self.burst
            }
            if len(self._buckets) >= self.MAX_CLIENTS:
                # Still full (many addresses at once, as IPv6 allows): the
                # memory stays bounded, and the worst is a fresh burst for all.
                self._buckets = {}
        self._buckets[who] = (tokens - 1, at)
        return 0.0


def _too_many(detail: str, wait: float) -> Problem:
    return Problem(429, detail, headers={"retry-after": str(max(1, math.ceil(wait)))})


def _unauthorized(detail: str, error: str | None) -> Problem:
    # RFC 6750: no error code when no key came, invalid_token for a bad one.
    challenge = f'Bearer realm="linkflow", error="{error}"' if error else 'Bearer realm="linkflow"'
    return Problem(401, detail, headers={"www-authenticate": challenge})


class Access:
    """The rules and state of one service's guard; the lifespan attaches the
    key ring once NATS is connected."""

    def __init__(
        self,
        policy: Policy,
        *,
        enabled: bool,
        write_rate: float,
        failure_rate: float,
        failure_burst: int,
    ) -> None:
        self.policy = policy
        self.enabled = enabled
        self.writes = RateLimit(write_rate, write_rate)
        self.failures = RateLimit(failure_rate, failure_burst)
        self.ring: KeyRing | None = None

    @classmethod
    def build(cls, policy: Policy, common: Common, write_rate: Rate) -> Access:
        return cls(
            policy,
            enabled=common.auth,
            write_rate=write_rate.per_second,
            failure_rate=common.auth_failure_rate.per_second,
            failure_burst=common.auth_failure_burst,
        )

    async def open(self, js: JetStreamContext) -> KeyRing:
        """Start following the keys; the caller stops the ring on exit."""
        self.ring = KeyRing(*await keys.buckets(js))
        self.ring.start()
        # Normally the keys are in before the first request; if not, /readyz
        # says so and calls get 503 until they are.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ring.synced.wait(), KEYS_WAIT)
        return self.ring

    def still_allows(self, name: str | None, scope: str) -> Callable[[], bool]:
        """For a long call (the live stream): whether the key that opened it
        may still do so, asked again while it runs."""
        ring = self.ring
        if not self.enabled or name is None or ring is None:
            return lambda: True
        return lambda: ring.allows(name, scope)

    def scopes(self, name: str | None) -> list[str]:
        """What the key named ``name`` may do, each scope it implies included
        (every scope with authentication off)."""
        record = self.ring.record(name) if self.ring and name else None
        if not self.enabled:
            return list(keys.SCOPES)
        return [s for s in keys.SCOPES if record is not None and record.allows(s)]

    def domains(self, name: str | None) -> frozenset[str] | None:
        """The only domains (hosts) the key named ``name`` sees; None: every
        domain (a key without a limit, or authentication off)."""
        record = self.ring.record(name) if self.enabled and self.ring and name else None
        return frozenset(record.domains) if record is not None and record.domains else None

    async def check(self) -> str | None:
        """Readiness: a guard without its keys answers every call 503."""
        if self.enabled and (self.ring is None or not self.ring.synced.is_set()):
            return "API keys not loaded yet"
        return None

    def decide(self, scope: Scope) -> tuple[Problem | None, str | None]:
        """The refusal for a request, or None and the name of its key."""
        # Routing matches the path below the root path (uvicorn --root-path):
        # so does the policy, or /<root>/api/… would pass as "not /api".
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        needed = self.policy(scope["method"], path)
        if needed is None or not self.enabled:
            return None, None
        if self.ring is None or not self.ring.synced.is_set():
            return Problem(503, "API keys are not loaded yet"), None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        match = _BEARER.match(header.decode("latin-1")) if header else None
        verdict = self.ring.check(match.group(1)) if match else None
        if verdict is None or verdict.key is None:
            # A right key always passes: an address over its failure limit
            # (a guesser, or anyone behind the same proxy) gets 429 only for
            # keys that fail, so a shared address cannot lock others out.
            client = scope.get("client")
            wait = self.failures.take(client[0] if client else "?")
            if wait:
                return _too_many("too many failed authentications from this address", wait), None
            if verdict is None:
                detail = "an API key is required: Authorization: Bearer <key>"
                return _unauthorized(detail, None), None
            return _unauthorized(verdict.why, "invalid_token"), None
        name = verdict.key.name
        if needed != keys.ANY_KEY and not verdict.key.allows(needed):
            return Problem(403, f"API key {name!r} lacks the scope {needed!r}"), name
        if scope["method"] not in READS:
            wait = self.writes.take(name)
            if wait:
                return _too_many(f"API key {name!r} is over its write rate", wait), name
        return None, name


class Guard:
    """ASGI middleware: every HTTP request passes :meth:`Access.decide` first."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self._app = app
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem, name = self._access.decide(scope)
            if problem is not None:
                metrics.API_REFUSED.labels(str(problem.status)).inc()
                await problem.response(scope["method"] == "HEAD")(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            state["api_key"] = name
            # The routes narrow what they show to these (SPEC: keys limited to domains).
            state["api_key_domains"] = self._access.domains(name)
        await self._app(scope, receive, send)
