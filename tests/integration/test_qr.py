"""``GET /api/links/{code}/qr``: the image a real decoder (ZXing) reads back
as the short URL, in both formats and at the sizes the SPEC allows."""

from __future__ import annotations

import io
import re

import httpx
import pytest
import zxingcpp
from PIL import Image

from tests.integration.conftest import PUBLIC_URL
from tests.integration.test_api import assert_problem


def decoded(image: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(image.convert("L"))]


async def link(gateway: httpx.AsyncClient, code: str) -> None:
    r = await gateway.post("/api/links", json={"url": "https://example.com/a?b=c", "code": code})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("size", [64, 512, 2048])
async def test_png_decodes_to_the_short_url(gateway: httpx.AsyncClient, size: int) -> None:
    await link(gateway, f"qr{size}")
    r = await gateway.get(f"/api/links/qr{size}/qr", params={"format": "png", "size": size})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    # Whole pixels per module: as large as fits, never larger than asked.
    assert image.width == image.height
    assert size / 2 < image.width <= size
    assert decoded(image) == [f"{PUBLIC_URL}/qr{size}"]


async def test_svg_is_the_size_asked_and_draws_the_same_symbol(gateway: httpx.AsyncClient) -> None:
    """The SVG is checked against the PNG's symbol: ZXing reads no SVG, so
    its path is drawn on a canvas module by module (segno writes a path of
    horizontal runs, ``h`` of each row)."""
    await link(gateway, "qrsvg")
    r = await gateway.get("/api/links/qrsvg/qr", params={"size": "300"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/svg+xml"
    svg = r.text
    assert re.search(r'<svg width="300" height="300" ', svg)
    side = int(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(1))  # type: ignore[union-attr]
    canvas = Image.new("L", (side * 8, side * 8), 255)
    path = re.search(r' d="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    x = y = 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:  # a horizontal run of dark modules on row y (drawn at its centre line)
            for i in range(int(float(a))):
                for dx in range(8):
                    for dy in range(8):
                        canvas.putpixel((int((x + i) * 8) + dx, int((y - 0.5) * 8) + dy), 0)
            x += float(a)
    assert decoded(canvas) == [f"{PUBLIC_URL}/qrsvg"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "gif"}, "format"),
        ({"size": "63"}, "size"),
        ({"size": "2049"}, "size"),
        ({"size": "big"}, "size"),
    ],
)
async def test_bad_format_or_size_is_422_naming_it(
    gateway: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    await link(gateway, "qrbad")
    assert_problem(await gateway.get("/api/links/qrbad/qr", params=params), 422, field)


async def test_unknown_or_deleted_code_is_404(gateway: httpx.AsyncClient) -> None:
    assert_problem(await gateway.get("/api/links/nosuch/qr"), 404)
    await link(gateway, "qrgone")
    assert (await gateway.delete("/api/links/qrgone")).status_code == 204
    assert_problem(await gateway.get("/api/links/qrgone/qr"), 404)


async def test_no_key_gets_no_image(gateway: httpx.AsyncClient) -> None:
    await link(gateway, "qrkey")
    async with httpx.AsyncClient(base_url=gateway.base_url) as stranger:
        assert_problem(await stranger.get("/api/links/qrkey/qr"), 401)
