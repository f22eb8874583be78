"""The guard's decisions that need no server."""

from __future__ import annotations

from typing import Any

import pytest

from services.analytics.api import policy as analytics_policy
from services.link.api import policy as gateway_policy
from shared.http import keys
from shared.http.access import Access, RateLimit
from shared.settings import Common


def scope(path: str, root_path: str = "", method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "client": ("10.0.0.1", 1),
    }


def test_a_root_path_does_not_hide_an_api_call() -> None:
    """Behind ``uvicorn --root-path /x`` routing sees /api/links in
    /x/api/links: so must the guard, or the call would pass as public."""
    access = Access.build(gateway_policy, Common(), "50/s")
    problem, _ = access.decide(scope("/x/api/links", root_path="/x"))
    assert problem is not None
    assert access.decide(scope("/x/healthz", root_path="/x")) == (None, None)


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
