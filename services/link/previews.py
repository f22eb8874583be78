"""Social previews (SPEC: preview): the page a link-preview fetcher gets
instead of a redirect, with the card's ``og:`` and ``twitter:`` tags.

Every value is escaped for an HTML attribute or text (``html.escape`` with
quotes): a title holding ``"><script>`` is shown as those characters, never
run. The page refreshes to the target, for a fetcher that follows it."""

from __future__ import annotations

from html import escape
from typing import Final

from shared.contracts import Preview

_HEAD: Final = '<!doctype html>\n<html><head><meta charset="utf-8">\n'


def card(preview: Preview, target: str, short_url: str) -> bytes:
    """The card's page for ``preview``, pointing at ``target``."""
    url = escape(target, quote=True)
    tags = [
        ("og:type", "website"),
        ("og:url", short_url),
        ("twitter:card", "summary_large_image" if preview.image else "summary"),
    ]
    if preview.title:
        tags += [("og:title", preview.title), ("twitter:title", preview.title)]
    if preview.description:
        tags += [
            ("og:description", preview.description),
            ("twitter:description", preview.description),
        ]
    if preview.image:
        tags += [("og:image", preview.image), ("twitter:image", preview.image)]
    meta = "".join(
        f'<meta {"name" if key.startswith("twitter:") else "property"}="{key}" '
        f'content="{escape(value, quote=True)}">\n'
        for key, value in tags
    )
    title = escape(preview.title or target, quote=True)
    return (
        f"{_HEAD}<title>{title}</title>\n{meta}"
        f'<meta http-equiv="refresh" content="0; url={url}">\n'
        f'</head><body><a href="{url}">{title}</a></body></html>\n'
    ).encode()
