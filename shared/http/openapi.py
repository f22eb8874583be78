"""What an HTTP service's OpenAPI document adds to the framework's: the
problem+json answers, the bearer scheme and each operation's scope, so that
a client generated from the document handles every answer it can get."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from shared.http.access import READS, Policy
from shared.http.problems import PROBLEM_TYPE, TITLES

Document = dict[str, Any]

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: Final = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "one entry per invalid field (422)",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
# Answers the guard gives before a route runs (shared.http.access).
_GUARDED: Final = {
    401: "no key, or an unknown, revoked or expired one (WWW-Authenticate: Bearer)",
    403: "the key lacks the scope this operation needs",
    429: "too many failed authentications from this address, or writes by this key (Retry-After)",
    503: "the service has not loaded the API keys yet",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status answered as problem+json."""
    return {status: _problem(status) for status in statuses}


def problem(status: int, why: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for one status answered as problem+json, saying when:
    it replaces the guard's own words for that status, so ``why`` says
    theirs too where they apply."""
    return {status: _problem(status, why)}


def _problem(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or TITLES.get(status, "Error"),
        "content": {PROBLEM_TYPE: {"schema": _PROBLEM_REF}},
    }


def event_stream(description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a Server-Sent Events route."""
    return {200: {"description": description, "content": {"text/event-stream": {}}}}


def documented(generate: Callable[[], Document], policy: Policy) -> Callable[[], Document]:
    """Wraps the framework's generator (``app.openapi``) with linkflow's additions."""
    cache: list[Document] = []

    def openapi() -> Document:
        if not cache:
            cache.append(_amend(generate(), policy))
        return cache[0]

    return openapi


def _amend(doc: Document, policy: Policy) -> Document:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # The framework's validation-error shape is never sent: a 422 is a problem.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key from `linkflow keys create`; the operation's "
            "security names the scope it needs (admin has every scope)",
        }
    }
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _problem(422, "a field is invalid (errors names each)")
            scope = policy(method.upper(), path)
            if scope is None:
                continue
            op["x-scope"] = scope
            op["security"] = [{"bearer": [scope]}]
            for status, why in _GUARDED.items():
                if status == 429 and method.upper() in READS:
                    why = "too many failed authentications from this address (Retry-After)"
                responses.setdefault(str(status), _problem(status, why))
    return doc
