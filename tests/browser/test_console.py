"""The operations console in headless Chromium (Debian's package, driven by
Playwright), against a real analytics service: it asks for a key, keeps it
in sessionStorage (never a cookie), sends it on every call, the live stream
included, and forgets it on sign-out."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client
from playwright.async_api import Browser, async_playwright, expect

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from shared import db
from shared.contracts import Click, encode
from shared.http import keys
from shared.jetstream import topology
from shared.settings import Common
from tests.conftest import TEST_WORKER
from tests.harness import eventually, serve
from tests.servers import Servers

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container Chromium needs --no-sandbox; the rest keeps it from
# reaching for Google's services, which this network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: `just browser` installs Debian's package and runs these")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        await b.close()


async def test_the_console_signs_in_with_a_key(
    browser: Browser, servers: Servers, nc: Client, db_url: str
) -> None:
    js = nc.jetstream()
    key = await keys.create(js, "operator", (keys.OPS, keys.STATS_READ))
    await db.migrate(db_url, ANALYTICS.sql)
    settings = AnalyticsSettings(
        common=Common(
            nats_url=servers.nats_url, database_url=db_url, analytics_database_url=db_url
        ),
        worker=TEST_WORKER,
    )
    async with serve(build_analytics(settings)) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/console")
        await expect(page.get_by_label("API key")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()

        await page.get_by_label("API key").fill("lf_wrong")
        await page.get_by_role("button", name="sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("unknown API key")
        await expect(page.locator("#app")).to_be_hidden()
        assert await page.evaluate("sessionStorage.getItem('linkflow-key')") is None

        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="sign in").click()
        await expect(page.locator("#pipeline tbody tr")).to_have_count(len(topology.CONSUMERS))
        assert await page.evaluate("sessionStorage.getItem('linkflow-key')") == key
        assert await page.evaluate("document.cookie") == ""
        assert key not in await page.content()

        # The live stream carries the key too (fetch, not EventSource). It
        # shows clicks from when it is open: publish until one is shown.
        sent = itertools.count()

        async def shown() -> bool:
            click = Click(id=f"browser-{next(sent)}", code="seen-live", ts=datetime.now(UTC))
            await js.publish("clicks.seen-live", encode(click))
            return "seen-live" in await page.locator("#live").inner_text()

        await eventually(shown, 10, "a live click in the console")

        # A reload in the same tab keeps the session; sign-out forgets it.
        await page.reload()
        await expect(page.locator("#pipeline tbody tr")).to_have_count(len(topology.CONSUMERS))
        await page.get_by_role("button", name="sign out").click()
        await expect(page.get_by_label("API key")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('linkflow-key')") is None
