"""The web app's own code (services/analytics/webapp/, vendor/ aside) as
Biome reads it: ``biome ci`` (lint and format, the repository's biome.json)
finds nothing to say. The web app has no build step, so this is its only
compiler: an unused variable, an assignment in a condition or a file not as
the formatter writes it fails here, with Biome's diagnostics in the message.
Fix with ``tests/polyglot/node_modules/.bin/biome check --write
services/analytics/webapp`` (after one run of this test has installed it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.analytics.webapp import FILES as WEBAPP
from tests import node

pytestmark = pytest.mark.polyglot

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_app_passes_biome() -> None:
    assert (ROOT / "biome.json").is_file()
    done = node.bin_("biome", "ci", "--colors=off", "--error-on-warnings", str(WEBAPP), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    # It looked at the web app's modules and style, not at nothing.
    ours = [p for p in WEBAPP.rglob("*") if p.suffix in {".js", ".css"} and "vendor" not in p.parts]
    assert f"Checked {len(ours)} files" in done.stdout + done.stderr, done.stdout + done.stderr
