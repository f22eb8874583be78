"""RFC 9457 problem+json errors of the gateway."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
# Codes are at most 64 characters (services.link.validation).
_ECHO_MAX = 64
TITLES = {
    500: "Internal Server Error",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field: its path (``rules[2].when.os``) and what is wrong."""

    field: str
    message: str


class ProblemDetails(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """RFC 9457 problem details: every error answer of every linkflow API."""

    type: Annotated[str, msgspec.Meta(description="a URI naming the kind of problem")]
    title: str
    status: int
    detail: Annotated[str, msgspec.Meta(description="what went wrong, for a person")]
    errors: Annotated[
        list[FieldError], msgspec.Meta(description="one entry per invalid field (422)")
    ] = []


class Problem(Exception):
    """Raised anywhere in a request; rendered as problem+json by the app."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers

    @classmethod
    def invalid(cls, errors: list[FieldError]) -> Problem:
        return cls(422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors)

    @classmethod
    def not_found(cls, code: str) -> Problem:
        # The code comes from the request path: a long one is cut, so that a
        # visitor's path is not echoed back at any length.
        if len(code) > _ECHO_MAX:
            code = f"{code[:_ECHO_MAX]}… ({len(code):,} characters)"
        return cls(404, f"no link with code {code!r}")

    def details(self) -> ProblemDetails:
        title = TITLES.get(self.status, "Error")
        return ProblemDetails(
            type=f"https://linkflow.dev/problems/{title.lower().replace(' ', '-')}",
            title=title,
            status=self.status,
            detail=self.detail,
            errors=self.errors,
        )

    def response(self, head: bool = False) -> Response:
        content = b"" if head else msgspec.json.encode(self.details())
        return Response(
            content, status_code=self.status, media_type=PROBLEM_TYPE, headers=self.headers
        )


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("query", "path", "body"))


def exception_handlers(validation_error: type[Exception]) -> dict[Any, Any]:
    """Handlers that turn every error of an HTTP service into problem+json.

    ``validation_error`` is the framework's request-validation exception
    (FastAPI's RequestValidationError), passed in so that this module stays
    free of FastAPI types."""

    async def problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response()

    async def invalid(_: Request, exc: Exception) -> Response:
        found: list[dict[str, Any]] = getattr(exc, "errors", list)()
        errors = [
            FieldError(_field(tuple(e.get("loc", ()))), str(e.get("msg", "invalid"))) for e in found
        ]
        return Problem.invalid(errors).response()

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Problem(exc.status_code, str(exc.detail)).response()

    async def timed_out(_: Request, exc: Exception) -> Response:
        # A query an API call started, cancelled by its pool's statement
        # timeout (SPEC, "Limits"): the caller asked for too much at once.
        return Problem(
            503,
            "the query ran out of time (the statement timeout): ask for less at once",
            headers={"Retry-After": "1"},
        ).response()

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return Problem(500, "internal error").response()

    return {
        Problem: problem,
        validation_error: invalid,
        HTTPException: http_error,
        asyncpg.QueryCanceledError: timed_out,
        Exception: unexpected,
    }
