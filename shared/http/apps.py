"""An HTTP service's FastAPI app, as every linkflow service with an API
builds it: errors as problem+json, the OpenAPI document at
``/api/openapi.json`` naming each answer and each operation's scope, Swagger
UI from the service's own origin (under the CSP), every ``/api`` call
behind the key guard, and cross-origin calls from the web app's origins alone
where the web app calls the service."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from shared.http import docs, openapi, problems
from shared.http.access import Access, Guard
from shared.urls import origins


def service_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: Sequence[APIRouter],
    access: Access,
    *,
    app_url: str | None = None,
    methods: Sequence[str] = ("GET",),
) -> FastAPI:
    """``app_url``: where the web app is (``LINKFLOW_APP_URL``) when it calls
    this service from a browser, with ``methods``; None: no cross-origin call."""
    app = FastAPI(
        title=title,
        lifespan=lifespan,
        docs_url=None,  # shared.http.docs: Swagger UI from this origin, under the CSP
        openapi_url="/api/openapi.json",
        generate_unique_id_function=openapi.operation_id,
        redoc_url=None,
        exception_handlers=problems.exception_handlers(RequestValidationError),
    )
    for router in routers:
        app.include_router(router)
    app.router.routes.extend(docs.routes(app.openapi_url, app.title))
    app.add_middleware(Guard, access=access)
    app.openapi = openapi.documented(app.openapi, access.policy)  # type: ignore[method-assign]
    if app_url is not None:
        # Outside the guard: a preflight carries no key. Only the web app's
        # origins may call the API from a browser (docs/api/index.md, "The web app").
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins(app_url),
            allow_methods=list(methods),
            allow_headers=["authorization", "content-type"],
            # An export's file name, for the web app's download.
            expose_headers=["content-disposition"],
            max_age=600,
        )
    return app
