"""``/healthz``, ``/readyz`` and ``/metrics``: the same three routes on every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared import metrics

# Each check returns None when fine, or a short reason why not.
Check = Callable[[], Awaitable[str | None]]


def routes(checks: dict[str, Check]) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(_: Request) -> Response:
        reasons: dict[str, str] = {}
        for name, check in checks.items():
            try:
                reason = await check()
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                reasons[name] = reason
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
        return Response(
            msgspec.json.encode(body),
            status_code=503 if reasons else 200,
            media_type="application/json",
        )

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ]
