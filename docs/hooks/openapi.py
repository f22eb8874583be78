"""MkDocs hook: the API reference pages render the OpenAPI documents the
services serve at ``/api/openapi.json``, built here from the apps themselves
(no server, no NATS, no database: building an app only declares its routes).

Written into ``docs/generated/`` (ignored by git) before MkDocs collects the
pages, and only when they changed, so ``mkdocs serve`` does not rebuild in a
loop.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
OUT = DOCS / "generated"


def documents() -> dict[str, dict[str, Any]]:
    """The gateway's and analytics' OpenAPI documents, as each serves them."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from services.analytics.app import build as build_analytics
    from services.analytics.settings import Settings as AnalyticsSettings
    from services.link.app import build as build_gateway
    from services.link.settings import Settings as GatewaySettings
    from shared.settings import Common

    # Placeholders: nothing connects while only the routes are declared.
    common = Common(
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql://docs@127.0.0.1:1/linkflow",
        analytics_database_url="postgresql://docs@127.0.0.1:1/linkflow_analytics",
        public_url="https://sho.rt",
    )
    with tempfile.TemporaryDirectory() as spool:
        gateway = build_gateway(GatewaySettings(common=common, spool_dir=spool))
        return {
            "gateway": gateway.api.openapi(),  # type: ignore[attr-defined]
            "analytics": build_analytics(AnalyticsSettings(common=common)).openapi(),
        }


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(exist_ok=True)
    written = []
    for name, document in documents().items():
        path = out / f"{name}.json"
        text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def on_pre_build(config: Any, **_: Any) -> None:
    write()
