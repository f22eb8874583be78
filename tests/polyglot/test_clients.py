"""Clients generated from the served OpenAPI documents work: a TypeScript
client (openapi-typescript's types, openapi-fetch) type-checks with
``tsc --noEmit`` and, run with Node, creates a link, follows it and reads its
stats; a Python client (openapi-python-client) does the same from here. Both
are generated fresh from the running services' documents into the test's own
directory (never committed), so a document that stops describing the API
breaks the build."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests import node
from tests.harness import eventually

pytestmark = pytest.mark.polyglot

# A browser's agent: a click from an agent that looks like a bot is not counted.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 linkflow-polyglot"


async def served_documents(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, into: Path
) -> dict[str, Path]:
    """Each service's document as it serves it, written to ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, client in (("gateway", gateway), ("analytics", analytics)):
        r = await client.get("/api/openapi.json")
        assert r.status_code == 200, r.text
        path = into / f"{name}.json"
        path.write_text(json.dumps(r.json(), indent=2))
        paths[name] = path
    return paths


def completed(proc: Any, what: str) -> str:
    """A finished command's stdout, or the test fails with all it said."""
    assert proc.returncode == 0, (
        f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return str(proc.stdout)


async def test_typescript_client_type_checks_and_runs(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, admin_key: str, tmp_path: Path
) -> None:
    work = tmp_path / "ts"
    docs = await served_documents(gateway, analytics, tmp_path / "docs")
    # The committed script and its compiler settings, beside the generated
    # types, resolving the packages from tests/polyglot/node_modules.
    modules = await asyncio.to_thread(node.npm_ci)
    (work / "generated").mkdir(parents=True)
    for name in ("client.ts", "tsconfig.json", "package.json"):
        shutil.copy(node.POLYGLOT / name, work / name)
    (work / "node_modules").symlink_to(modules, target_is_directory=True)
    for name, doc in docs.items():
        out = work / "generated" / f"{name}.d.ts"
        # --default-non-nullable=false: otherwise a property with a default
        # becomes required in a component schema, even one only requests use
        # (NewLink's redirect_type, tags…); answers list theirs as required.
        generated = await asyncio.to_thread(
            node.bin_,
            "openapi-typescript",
            str(doc),
            "--output",
            str(out),
            "--default-non-nullable=false",
            cwd=work,
        )
        completed(generated, f"openapi-typescript of the {name}'s document")
        assert "paths" in out.read_text()

    checked = await asyncio.to_thread(node.bin_, "tsc", "--noEmit", "-p", "tsconfig.json", cwd=work)
    completed(checked, "tsc --noEmit over client.ts and the generated types")

    ran = await asyncio.to_thread(
        _run_client, work, str(gateway.base_url), str(analytics.base_url), admin_key
    )
    summary = json.loads(completed(ran, "node client.ts").strip().splitlines()[-1])
    link = summary["link"]
    assert link["url"].startswith("https://example.com/polyglot/typescript?at=")
    assert link["short_url"].endswith(f"/{link['code']}")
    assert link["version"] >= 1
    assert summary["unknown"]["status"] == summary["unknown"]["problem_status"] == 404
    assert summary["invalid"]["status"] == 422
    assert "url" in summary["invalid"]["fields"]
    assert summary["follow"] == {"status": 302, "location": link["url"]}
    assert summary["stats"]["code"] == link["code"]
    assert summary["stats"]["total"] >= 1
    assert summary["stats"]["visitors"] >= 1
    assert summary["stats"]["series_count"] == summary["stats"]["total"]

    # The link the script made is the gateway's.
    r = await gateway.get(f"/api/links/{link['code']}")
    assert r.status_code == 200
    assert r.json()["url"] == link["url"]


def _run_client(work: Path, gateway: str, analytics: str, key: str) -> Any:
    """``node client.ts`` with the key in its environment, not its arguments."""
    return subprocess.run(
        [str(node.NODE), "client.ts", gateway, analytics],
        cwd=work,
        env={**node.env(), "LINKFLOW_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# openapi-python-client 0.29 generates JSON, text/* and
# application/octet-stream bodies and answers only, however the document
# describes the others; its documented way out is to read the others as
# octet-stream (bytes; the request keeps its own Content-Type). Without it
# the import (a text/csv body) is skipped and the QR code's answer
# (image/svg+xml or image/png) omitted, each with a warning.
GENERATOR_CONFIG = {
    "content_type_overrides": {
        "text/csv": "application/octet-stream",
        "image/svg+xml": "application/octet-stream",
        "image/png": "application/octet-stream",
    }
}


async def generate_python(doc: Path, package: Path) -> str:
    """openapi-python-client's package for ``doc`` at ``package``; what it said."""
    config = package.parent / f"{package.name}.config.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(doc),
        "--output-path",
        str(package),
        "--meta",
        "none",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=package.parent,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    said = out.decode(errors="replace")
    assert proc.returncode == 0, f"openapi-python-client on {doc.name}:\n{said}"
    assert (package / "client.py").exists(), said
    return said


@contextlib.contextmanager
def imported(root: Path, *names: str) -> Iterator[list[ModuleType]]:
    """The generated packages in ``root``, imported; forgotten afterwards."""
    sys.path.insert(0, str(root))
    try:
        yield [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m.split(".")[0] in names]:
            del sys.modules[module]


def operation(package: ModuleType, operation_id: str) -> Any:
    """The generated module of an operation, whatever tag it is filed under."""
    api = importlib.import_module(f"{package.__name__}.api")
    for tag in pkgutil.iter_modules(api.__path__):
        tagged = importlib.import_module(f"{api.__name__}.{tag.name}")
        if any(m.name == operation_id for m in pkgutil.iter_modules(tagged.__path__)):
            return importlib.import_module(f"{tagged.__name__}.{operation_id}")
    raise AssertionError(f"{package.__name__} has no module for operation {operation_id}")


def answer_model(models: ModuleType, doc: Path, path: str, method: str, status: str) -> Any:
    """The generated model of the schema a document gives an answer."""
    content = json.loads(doc.read_text())["paths"][path][method]["responses"][status]["content"]
    (media,) = content.values()
    name = media["schema"]["$ref"].rsplit("/", 1)[-1]
    return getattr(models, name)


def body_model(endpoint: Any) -> Any:
    """The generated model an operation's ``body`` argument takes."""
    hint = inspect.signature(endpoint.asyncio_detailed).parameters["body"].annotation
    models = [hint, *typing.get_args(hint)]
    found = [m for m in models if isinstance(m, type) and hasattr(m, "from_dict")]
    assert found, f"{endpoint.__name__}'s body is not a model: {hint!r}"
    return found[0]


async def test_python_client_creates_follows_and_reads_stats(
    gateway: httpx.AsyncClient, analytics: httpx.AsyncClient, admin_key: str, tmp_path: Path
) -> None:
    docs = await served_documents(gateway, analytics, tmp_path / "docs")
    said = await asyncio.gather(
        generate_python(docs["gateway"], tmp_path / "gateway_client"),
        generate_python(docs["analytics"], tmp_path / "analytics_client"),
    )
    # Whatever openapi-python-client cannot make sense of in a document it
    # skips, with a warning, and exits 0: no warning, and every operation
    # generated.
    warned = [text for text in said if re.search(r"WARNING|ERROR", text)]
    assert not warned, "\n".join(warned)

    with imported(tmp_path, "gateway_client", "analytics_client") as (gw, an):
        gw_models = importlib.import_module("gateway_client.models")
        an_models = importlib.import_module("analytics_client.models")
        create_link = operation(gw, "create_link")
        get_link = operation(gw, "get_link")
        link_stats = operation(an, "link_stats")
        for package, doc in ((gw, docs["gateway"]), (an, docs["analytics"])):
            for ops in json.loads(doc.read_text())["paths"].values():
                for op in ops.values():
                    operation(package, op["operationId"])
        problem = answer_model(gw_models, docs["gateway"], "/api/links/{code}", "get", "404")

        async with (
            gw.AuthenticatedClient(base_url=str(gateway.base_url), token=admin_key) as gw_client,
            an.AuthenticatedClient(base_url=str(analytics.base_url), token=admin_key) as an_client,
        ):
            # Create.
            target = f"https://example.com/polyglot/python?at={time.time_ns()}"
            body = body_model(create_link).from_dict({"url": target, "tags": ["polyglot"]})
            created = await create_link.asyncio_detailed(client=gw_client, body=body)
            assert created.status_code == 201, created.content
            link = created.parsed
            assert isinstance(link, gw_models.Link), link
            assert link.url == target
            assert link.short_url.endswith(f"/{link.code}")
            assert list(link.tags) == ["polyglot"]
            assert isinstance(link.created_at, datetime), link.created_at
            assert link.version >= 1

            # Read it back.
            read = await get_link.asyncio_detailed(link.code, client=gw_client)
            assert read.status_code == 200, read.content
            assert isinstance(read.parsed, gw_models.Link)
            assert (read.parsed.code, read.parsed.url, read.parsed.version) == (
                link.code,
                target,
                link.version,
            )

            # Problems parse into the generated model: an unknown code, a bad URL.
            missing = await get_link.asyncio_detailed(f"{link.code}-missing", client=gw_client)
            assert missing.status_code == 404, missing.content
            assert missing.headers["content-type"].startswith("application/problem+json")
            assert isinstance(missing.parsed, problem), missing.parsed
            assert missing.parsed.status == 404
            assert missing.parsed.title
            invalid = await create_link.asyncio_detailed(
                client=gw_client, body=body_model(create_link).from_dict({"url": "not a url"})
            )
            assert invalid.status_code == 422, invalid.content
            assert isinstance(invalid.parsed, problem), invalid.parsed
            assert invalid.parsed.status == 422
            assert "url" in [error.field for error in invalid.parsed.errors], invalid.content

            # Follow it, as a browser would (the served address: the short
            # URL's host is the public one).
            async with httpx.AsyncClient(headers={"user-agent": BROWSER}) as visitor:
                followed = await visitor.get(f"{gateway.base_url}/{link.code}")
            assert followed.status_code == 302
            assert followed.headers["location"] == target

            # Its stats, once analytics has counted the click.
            async def counted() -> Any:
                r = await link_stats.asyncio_detailed(link.code, client=an_client)
                assert r.status_code == 200, r.content
                assert isinstance(r.parsed, an_models.LinkStats), r.parsed
                return r.parsed if r.parsed.total >= 1 else None

            stats = await eventually(counted, 20, "the click in the generated client's stats")
            assert stats.code == link.code
            assert stats.total == 1
            assert stats.visitors == 1
            assert sum(bucket.count for bucket in stats.series) == 1
