"""QR codes of short URLs (``GET /api/links/{code}/qr``), drawn by segno
(pure Python: its PNG writer needs no imaging library)."""

from __future__ import annotations

import io
from typing import Final

import segno

FORMATS: Final = {"svg": "image/svg+xml", "png": "image/png"}
MIN_SIZE: Final = 64
MAX_SIZE: Final = 2048
DEFAULT_SIZE: Final = 512
# The quiet zone the standard asks for around the symbol, in modules.
BORDER: Final = 4


def render(url: str, kind: str, size: int) -> bytes:
    """The QR code of ``url`` (error correction M, 15% of the symbol may be
    damaged). SVG is exactly ``size`` pixels wide, drawn to scale; PNG is
    the largest image not wider than ``size`` whose modules are whole pixels
    (a module split across pixels blurs and scans worse), at least one pixel
    per module."""
    code = segno.make(url, error="m", micro=False)
    out = io.BytesIO()
    if kind == "svg":
        code.save(out, kind="svg", border=BORDER, omitsize=True, xmldecl=False)
        svg = out.getvalue().decode()
        return svg.replace("<svg ", f'<svg width="{size}" height="{size}" ', 1).encode()
    width, _ = code.symbol_size(scale=1, border=BORDER)
    code.save(out, kind="png", border=BORDER, scale=max(1, size // width))
    return out.getvalue()
