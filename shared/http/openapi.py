"""What an HTTP service's OpenAPI document adds to the framework's: the
problem+json answers, the bearer scheme and each operation's scope, so that
a client generated from the document handles every answer it can get."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
from starlette.responses import Response

from shared.http.access import READS, Policy
from shared.http.problems import PROBLEM_TYPE, TITLES, FieldError, Problem, ProblemDetails

Document = dict[str, Any]
Answers = dict[int | str, dict[str, Any]]

_COMPONENTS: Final = "#/components/schemas/"
# Every body type a route declared, by name: the document's components are
# generated from these (msgspec's JSON Schema, the same as the wire's).
_TYPES: dict[str, type[msgspec.Struct]] = {ProblemDetails.__name__: ProblemDetails}
_PROBLEM_REF: Final = {"$ref": f"{_COMPONENTS}{ProblemDetails.__name__}"}
# Answers the guard gives before a route runs (shared.http.access).
_GUARDED: Final = {
    401: "no key, or an unknown, revoked or expired one (WWW-Authenticate: Bearer)",
    403: "the key lacks the scope this operation needs",
    429: "too many failed authentications from this address, or writes by this key (Retry-After)",
    503: "the service has not loaded the API keys yet",
}
# Examples by number: the framework drops every null from the document it
# generates (a link's ``expires_at: null`` with them), so a route's document
# carries a placeholder that ``_amend`` replaces with the example itself.
_EXAMPLES: list[Any] = []
_EXAMPLE: Final = "x-linkflow-example"
# A 422's example names a field, as every 422 does.
_INVALID_EXAMPLE: Final = [FieldError("url", "must be an absolute http or https URL")]


def ref(struct: type[msgspec.Struct]) -> dict[str, str]:
    """A ``$ref`` to ``struct``'s schema, which the document will then carry."""
    _TYPES[struct.__name__] = struct
    return {"$ref": f"{_COMPONENTS}{struct.__name__}"}


def route(
    ok: int = 200,
    body: type[msgspec.Struct] | None = None,
    example: msgspec.Struct | None = None,
    *,
    says: str = "",
    media: Mapping[str, str] | None = None,
    accepts: type[msgspec.Struct] | None = None,
    accepts_example: msgspec.Struct | None = None,
    accepts_media: Mapping[str, Any] | None = None,
    problems: Mapping[int, str | None] | Iterable[int] = (),
    links: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A route's keyword arguments (``status_code``, ``responses``,
    ``openapi_extra``) describing each body it takes and gives.

    ``body``/``example``: its JSON answer with status ``ok``; ``media``: a
    non-JSON answer instead, media type -> schema-less description (an image,
    CSV, Server-Sent Events). ``accepts``: its JSON request body (read by the
    route itself, within the body bound); ``accepts_media`` another one.
    ``problems``: each status it may answer with problem+json, and why
    (None: the status's title). ``links``: OpenAPI links from the answer to
    other operations (a created link's code to ``get_link``)."""
    answer: dict[str, Any] = {"description": says or TITLES.get(ok, "OK")}
    if body is not None:
        json: dict[str, Any] = {"schema": ref(body)}
        if example is not None:
            json["example"] = _example(example)
        answer["content"] = {"application/json": json}
    elif media:
        answer["content"] = {kind: {"schema": raw(kind)} for kind in media}
        answer["description"] = says or "; ".join(f"{k}: {v}" for k, v in media.items())
    if links:
        answer["links"] = dict(links)
    reasons = problems if isinstance(problems, Mapping) else dict.fromkeys(problems)
    responses: Answers = {ok: answer}
    responses |= {status: _problem(status, why) for status, why in reasons.items()}
    extra: dict[str, Any] = {}
    if accepts is not None:
        content: dict[str, Any] = {"schema": ref(accepts)}
        if accepts_example is not None:
            content["example"] = _example(accepts_example)
        extra["requestBody"] = {"required": True, "content": {"application/json": content}}
    elif accepts_media:
        extra["requestBody"] = {"required": True, "content": dict(accepts_media)}
    out = {"status_code": ok, "responses": responses, "openapi_extra": extra or None}
    if media or ok == 204:
        # Not the framework's default JSON answer, whose empty schema the
        # document would otherwise list beside the real media types.
        out["response_class"] = Response
    return out


def raw(kind: str) -> dict[str, str]:
    """The schema of a body that is not JSON: bytes of that media type.
    ``format: binary`` beside OpenAPI 3.1's ``contentMediaType``: generators
    (openapi-python-client) give a file for it, not a text they then misuse."""
    return {"type": "string", "format": "binary", "contentMediaType": kind}


def _example(value: msgspec.Struct) -> dict[str, int]:
    _EXAMPLES.append(msgspec.to_builtins(value))
    return {_EXAMPLE: len(_EXAMPLES) - 1}


def _examples(node: Any) -> Any:
    """``node`` with each example placeholder replaced by its example."""
    if isinstance(node, dict):
        if node.keys() == {_EXAMPLE}:
            return _EXAMPLES[node[_EXAMPLE]]
        return {key: _examples(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_examples(item) for item in node]
    return node


def _problem(status: int, why: str | None = None) -> dict[str, Any]:
    detail = why or TITLES.get(status, "Error")
    example = Problem(status, detail, _INVALID_EXAMPLE if status == 422 else None).details()
    return {
        "description": detail,
        "content": {PROBLEM_TYPE: {"schema": _PROBLEM_REF, "example": _example(example)}},
    }


def operation_id(route: Any) -> str:
    """An operation's id: its handler's name (``create_link``), which a
    generated client names its function after."""
    name: str = route.name
    return name


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
    schemas.update(_components(doc))
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
            if "422" in responses and "example" not in str(responses["422"]):
                # The framework's own 422 (a path or query parameter of the
                # wrong type) is a problem like every other.
                responses["422"] = _problem(422, "a parameter is invalid (errors names each)")
            scope = policy(method.upper(), path)
            if scope is None:
                continue
            op["x-scope"] = scope
            op["security"] = [{"bearer": [scope]}]
            for status, why in _GUARDED.items():
                if status == 429 and method.upper() in READS:
                    why = "too many failed authentications from this address (Retry-After)"
                responses.setdefault(str(status), _problem(status, why))
    amended: Document = _examples(doc)
    return amended


def _components(doc: Document) -> dict[str, Any]:
    """The schemas of every type the document refers to, and of the types
    those refer to (msgspec's JSON Schema, as the bus's contracts)."""
    text = str(doc.get("paths", {}))
    used = [struct for name, struct in _TYPES.items() if f"{_COMPONENTS}{name}'" in text]
    _, components = msgspec.json.schema_components(used, ref_template=_COMPONENTS + "{name}")
    return components
