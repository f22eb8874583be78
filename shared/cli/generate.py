"""Generates ``shared/schemas/*.json`` and ``shared/asyncapi.yaml`` from the contracts,
and ``deploy/nats.conf`` from the NATS permissions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from shared.cli import permissions
from shared.contracts import DLQ_HEADERS, SUBJECTS, LinkEntry, VisitCount
from shared.http.keys import ApiKey

# shared/: the generated contracts live beside contracts.py.
ROOT = Path(__file__).parents[1]
SCHEMAS = ROOT / "schemas"
ASYNCAPI = ROOT / "asyncapi.yaml"


# Where a schema's own definitions are (JSON Schema 2020-12's place for them).
REF = "#/$defs/"
# Every time on the wire, nested ones too (shared.contracts.encode).
TIME = "RFC 3339 UTC with milliseconds"


def json_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """``struct``'s schema, self-contained: every ``$ref`` points into its own
    ``$defs``, which hold exactly the structs it reaches (a reader in any
    language resolves it from this one file, with no base URI to fetch)."""
    (_ref,), components = msgspec.json.schema_components([struct], ref_template=REF + "{name}")
    schema = dict(components[struct.__name__])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://linkflow.dev/schemas/{struct.__name__}.json"
    # msgspec copies the docstring as it finds it, and its versions (and
    # Python's, which strips indentation since 3.13) disagree on the
    # whitespace: the description is the docstring's words, joined here.
    schema["description"] = " ".join((struct.__doc__ or struct.__name__).split())
    _describe_times(schema, TIME)
    defs: dict[str, Any] = {}
    for name in _reached(schema, components):
        sub = dict(components[name])
        sub["description"] = " ".join(sub.get("description", name).split())
        _describe_times(sub, TIME)
        defs[name] = sub
    if defs:
        schema["$defs"] = defs
    return schema


def _refs(node: Any) -> Iterator[str]:
    """The struct names that ``node``'s ``$ref``s point to, at any depth."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF):
            yield ref.removeprefix(REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reached(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    """The components ``schema`` refers to, directly or through each other."""
    seen: set[str] = set()
    todo = list(_refs(schema))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(components[name]))
    return sorted(seen)


def _describe_times(schema: dict[str, Any], description: str) -> None:
    for prop in schema.get("properties", {}).values():
        for option in prop.get("anyOf", [prop]):
            if option.get("format") == "date-time":
                option["description"] = description


def json_schemas() -> dict[str, str]:
    structs: set[type[msgspec.Struct]] = {s for s, _, _ in SUBJECTS.values()}
    # And the values of the KV buckets other languages read: links, visit
    # counts, API keys.
    structs |= {LinkEntry, VisitCount, ApiKey}
    return {
        f"{s.__name__}.json": json.dumps(json_schema(s), indent=2, sort_keys=True) + "\n"
        for s in sorted(structs, key=lambda s: s.__name__)
    }


# The payload files are JSON Schema 2020-12 (their $schema says so), and the
# document says that too, in a Multi Format Schema Object. AsyncAPI's default
# format (its Schema Object, a superset of draft-07) would claim otherwise;
# the official parser (@asyncapi/parser 3.6) parses a format it has no parser
# for as it is, refs followed, with no error, and checks no v3 payload's
# schema either way: the JSON Schema tests (tests/polyglot) check them, with
# 2020-12 validators.
SCHEMA_FORMAT = "application/schema+json;version=2020-12"


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for subject, (struct, carrier, summary) in SUBJECTS.items():
        name = struct.__name__
        key = subject.replace(".", "_").replace("{", "").replace("}", "")
        channel: dict[str, Any] = {
            "address": subject,
            "description": f"{summary} ({carrier})",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        if "{code}" in subject:
            channel["parameters"] = {"code": {"description": "the link's short code"}}
        if "{id}" in subject:
            channel["parameters"] = {"id": {"description": "unique to one request"}}
        channels[key] = channel
        operations[f"publish_{key}"] = {"action": "send", "channel": {"$ref": f"#/channels/{key}"}}
        messages[name] = {
            "name": name,
            "contentType": "application/json",
            "payload": {
                "schemaFormat": SCHEMA_FORMAT,
                "schema": {"$ref": f"./schemas/{name}.json"},
            },
        }
    channels["dlq"] = {
        "address": "dlq.{stream}.{consumer}",
        "description": "dead letters: the original payload unchanged, original headers plus "
        + ", ".join(DLQ_HEADERS)
        + " (stream DLQ)",
        "parameters": {"stream": {}, "consumer": {}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "linkflow",
            "version": "1.0.0",
            "description": "Subjects and payloads between linkflow services",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for the plain dicts, lists and scalars above."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{json.dumps(k)}:\n{_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{json.dumps(k)}: {json.dumps(v)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}-\n{_yaml(item, indent + 1)}")
            else:
                lines.append(f"{pad}- {json.dumps(item)}")
    return "\n".join(lines)


def render_all() -> dict[Path, str]:
    files = {SCHEMAS / name: text for name, text in json_schemas().items()}
    files[ROOT.parent / "deploy" / "nats.conf"] = permissions.deploy_conf()
    files[ASYNCAPI] = (
        "# Generated by `linkflow schemas` from shared/contracts.py.\n" + _yaml(asyncapi()) + "\n"
    )
    return files


def write_all() -> list[Path]:
    SCHEMAS.mkdir(exist_ok=True)
    written = []
    for path, text in render_all().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written
