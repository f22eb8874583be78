"""The web app (``/app/``): static modules served as they are, no build step.

It calls the analytics API on its own origin, the gateway's API (links)
cross-origin at ``public_url``, the webhooks service's API at
``webhooks_url`` and a click-recorder's export at ``click_recorder_url``
(when set); each allows exactly ``app_url``'s origins (shared.http.apps,
services/webhooks/src/api.ts). Served under a
Content-Security-Policy that allows exactly that (shared/http/csp.py): no
inline script or style.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from shared.http import csp
from shared.settings import Common

FILES: Final = Path(__file__).with_name("webapp")


def mount(app: FastAPI, common: Common) -> None:
    router = APIRouter(include_in_schema=False)

    @router.get("/app")
    async def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    @router.get("/app/config.json")
    async def config() -> JSONResponse:
        return JSONResponse(
            {
                "gateway": common.public_url.rstrip("/"),
                "webhooks": common.webhooks_url.rstrip("/"),
                "clicks": common.click_recorder_url.rstrip("/") or None,
            }
        )

    app.include_router(router)
    # The page calls this origin, the gateway's, the webhooks API's and a
    # click-recorder's (when browsers reach one), and loads nothing else.
    apis = (common.public_url, common.webhooks_url, common.click_recorder_url)
    policy = csp.policy(dict.fromkeys(csp.origin(url) for url in apis if url))
    app.mount("/app", csp.Guarded(StaticFiles(directory=FILES, html=True), policy), name="app")
