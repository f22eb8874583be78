"""The web app (``/app/``): static modules served as they are, no build step.

It calls the analytics API on its own origin and the gateway's API (links)
cross-origin at ``public_url``; the gateway allows exactly ``app_url``'s
origin (services/link/app.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from shared.settings import Common

FILES: Final = Path(__file__).with_name("webapp")


def mount(app: FastAPI, common: Common) -> None:
    router = APIRouter(include_in_schema=False)

    @router.get("/app")
    async def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    @router.get("/app/config.json")
    async def config() -> JSONResponse:
        return JSONResponse({"gateway": common.public_url.rstrip("/")})

    app.include_router(router)
    app.mount("/app", StaticFiles(directory=FILES, html=True), name="app")
