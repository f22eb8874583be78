"""The guard's decisions that need no server."""

from __future__ import annotations

from typing import Any, cast

import pytest
from nats.js.kv import KeyValue

from services.analytics.api import policy as analytics_policy
from services.link.api import policy as gateway_policy
from shared.http import keys
from shared.http.access import Access, RateLimit
from shared.http.keys import KeyRing
from shared.settings import Common, Rate

FIFTY = Rate.parse("50/s")


def scope(path: str, root_path: str = "", method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "client": ("10.0.0.1", 1),
    }


def loaded(access: Access) -> Access:
    """The guard with its key ring loaded (and empty): no server needed,
    since a ring reads its bucket only in the watch that start() begins."""
    access.ring = KeyRing(cast(KeyValue, None), cast(KeyValue, None))
    access.ring.synced.set()
    return access


def test_a_root_path_does_not_hide_an_api_call() -> None:
    """Behind ``uvicorn --root-path /x`` routing sees /api/links in
    /x/api/links: so must the guard, or the call would pass as public."""
    access = loaded(Access.build(gateway_policy, Common(), FIFTY))
    problem, name = access.decide(scope("/x/api/links", root_path="/x"))
    assert problem is not None
    assert (problem.status, name) == (401, None)
    assert problem.headers == {"www-authenticate": 'Bearer realm="linkflow"'}
    assert "an API key is required" in problem.detail
    assert access.decide(scope("/x/healthz", root_path="/x")) == (None, None)


def test_an_unknown_key_is_401_invalid_token() -> None:
    access = loaded(Access.build(gateway_policy, Common(), FIFTY))
    request = scope("/api/links")
    request["headers"] = [(b"authorization", b"Bearer lf_" + b"x" * 32)]
    problem, name = access.decide(request)
    assert problem is not None
    assert (problem.status, name, problem.detail) == (401, None, "unknown API key")
    assert problem.headers == {"www-authenticate": 'Bearer realm="linkflow", error="invalid_token"'}


def test_without_its_keys_the_guard_answers_503() -> None:
    access = Access.build(gateway_policy, Common(), FIFTY)
    problem, _ = access.decide(scope("/api/links"))
    assert problem is not None
    assert problem.status == 503
    assert access.decide(scope("/healthz")) == (None, None)


@pytest.mark.parametrize(
    ("policy", "method", "path", "scope_needed"),
    [
        (gateway_policy, "GET", "/api/links", keys.LINKS_READ),
        (gateway_policy, "HEAD", "/api/links/abc", keys.LINKS_READ),
        (gateway_policy, "POST", "/api/links/import", keys.LINKS_WRITE),
        (gateway_policy, "GET", "/api/linksx", keys.ADMIN),
        (gateway_policy, "GET", "/api/openapi.json", None),
        (gateway_policy, "GET", "/abc", None),
        (analytics_policy, "GET", "/api/stream/clicks", keys.STATS_READ),
        (analytics_policy, "POST", "/api/dlq/replay", keys.OPS),
        (analytics_policy, "GET", "/api/pipelinex", keys.ADMIN),
        (analytics_policy, "GET", "/console", None),
    ],
)
def test_policies(policy: Any, method: str, path: str, scope_needed: str | None) -> None:
    assert policy(method, path) == scope_needed


def test_a_rate_limit_keeps_bounded_memory() -> None:
    limit = RateLimit(rate=1.0, burst=1.0)
    limit.MAX_CLIENTS = 100  # type: ignore[misc]
    for i in range(1000):
        assert limit.take(f"10.0.{i // 256}.{i % 256}") == 0.0
        assert len(limit._buckets) <= 100
    assert limit.take("10.0.3.231") > 0  # the last address spent its token
