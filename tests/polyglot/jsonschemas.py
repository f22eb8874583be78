"""linkflow's JSON Schema files, and two independent readers of them: Python's
``jsonschema`` (2020-12, formats checked) and ajv under Node (validate.mjs)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from shared.cli.generate import SCHEMAS
from tests import node

FILES = sorted(p.name for p in SCHEMAS.glob("*.json"))


def load(name: str, directory: Path = SCHEMAS) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((directory / name).read_text())
    return schema


def refs(node_: Any) -> Iterator[str]:
    """Every ``$ref`` in a schema, at any depth."""
    if isinstance(node_, dict):
        if isinstance(node_.get("$ref"), str):
            yield node_["$ref"]
        for value in node_.values():
            yield from refs(value)
    elif isinstance(node_, list):
        for value in node_:
            yield from refs(value)


def pointed(schema: dict[str, Any], ref: str) -> Any:
    """What a ``#/…`` reference points to inside ``schema`` (KeyError if nothing)."""
    assert ref.startswith("#/"), f"{ref} does not point inside the file"
    target: Any = schema
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def inlined(node_: Any, root: dict[str, Any], through: tuple[str, ...] = ()) -> Any:
    """``node_`` with every ``$ref`` replaced by what it points to, as a
    dereferencing tool (the AsyncAPI parser's) hands a schema on."""
    if isinstance(node_, dict):
        if set(node_) == {"$ref"}:
            ref = node_["$ref"]
            assert ref not in through, f"{ref} refers to itself"
            return inlined(pointed(root, ref), root, (*through, ref))
        return {k: inlined(v, root, through) for k, v in node_.items()}
    if isinstance(node_, list):
        return [inlined(v, root, through) for v in node_]
    return node_


def python_verdict(schema: dict[str, Any], message: Any) -> list[str]:
    """What ``jsonschema`` finds wrong with ``message`` (nothing: valid). The
    FormatChecker checks ``date-time`` (with rfc3339-validator installed)."""
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{list(e.absolute_path)} {e.message}" for e in validator.iter_errors(message)]


def ajv(
    cases: list[tuple[str, Any]], directory: Path = SCHEMAS
) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """ajv's verdicts on ``(schema file, message)`` pairs, one run of Node for
    all of them; and what compiling each file of ``directory`` said (None: it
    compiled)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(
            {
                "schemas": str(directory),
                "cases": [{"schema": s, "message": m} for s, m in cases],
            },
            f,
        )
        f.flush()
        done = node.run("validate.mjs", f.name)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["compiled"], out["verdicts"]
