"""An HTTP service's FastAPI app, as every linkflow service with an API
builds it: errors as problem+json, the OpenAPI document at
``/api/openapi.json`` naming each answer and each operation's scope, Swagger
UI from the service's own origin (under the CSP), and every ``/api`` call
behind the key guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError

from shared.http import docs, openapi, problems
from shared.http.access import Access, Guard


def service_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: Sequence[APIRouter],
    access: Access,
) -> FastAPI:
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
    return app
