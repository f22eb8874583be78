"""The README stays a front door and the docs site stays whole: every page
under docs/ is in mkdocs.yml's nav (`just docs` builds it strictly)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


class _Loader(yaml.SafeLoader):
    """mkdocs.yml names Python objects (`!!python/name:`): read them as text."""


_Loader.add_multi_constructor(
    "tag:yaml.org,2002:python/", lambda loader, suffix, node: f"!!python/{suffix}"
)


def _config() -> dict[str, Any]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    assert isinstance(config, dict)
    return config


def _nav_pages(entry: Any) -> set[str]:
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, list):
        return set().union(*(_nav_pages(e) for e in entry))
    if isinstance(entry, dict):
        return set().union(*(_nav_pages(v) for v in entry.values()))
    return set()


def _pages() -> set[str]:
    skipped = ("hooks", "generated")
    return {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if p.relative_to(DOCS).parts[0] not in skipped
    }


def test_the_readme_is_short_and_self_contained() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "SPEC.md" not in readme
    assert "../shared" not in readme


def test_the_readme_links_only_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    nav = _nav_pages(_config()["nav"])
    assert nav == _pages()


def test_the_build_is_strict_and_needs_the_openapi_hook() -> None:
    config = _config()
    assert config["strict"] is True
    assert "docs/hooks/openapi.py" in config["hooks"]
    assert config["validation"]["anchors"] == "warn"
    for page in ("api/gateway.md", "api/analytics.md"):
        assert "[OAD(../generated/" in (DOCS / page).read_text(encoding="utf-8")


def test_the_event_contract_names_every_subject_and_header() -> None:
    from shared import contracts

    events = (DOCS / "events.md").read_text(encoding="utf-8")
    for subject in contracts.SUBJECTS:
        assert f"`{subject.replace('{code}', '<code>').replace('{id}', '<id>')}`" in events
    headers = [
        contracts.HDR_MSG_ID,
        contracts.HDR_REQUEST_ID,
        contracts.HDR_ENQUEUED_AT,
        contracts.HDR_ORIGINAL_MSG_ID,
        *contracts.DLQ_HEADERS,
    ]
    for header in headers:
        assert f"`{header}`" in events, header
    for schema in (ROOT / "shared" / "schemas").glob("*.json"):
        assert schema.name in events, schema.name
