"""The web app in headless Chromium (Debian's package, driven by Playwright)
against linkflow as ``linkflow up`` runs it: every service its own process,
the app served by analytics, the links API called cross-origin on the
gateway. One walk through what a user does, a screenshot of each page in
``artifacts/browser/`` (kept when a step fails), no console error and no
failed request on the way."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, Request, expect

from shared.http import keys
from tests.harness import eventually, service_ports, supervised
from tests.integration.test_analytics import human
from tests.integration.test_operations import dead_letter_a_click
from tests.integration.test_yielding import busy_gateway
from tests.servers import Servers

pytestmark = pytest.mark.browser

# Visible form controls without a label (a <label>, aria-label or aria-labelledby).
UNLABELLED = """[...document.querySelectorAll("input, select, textarea, button")]
  .filter(e => e.offsetParent !== null && e.type !== "hidden")
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
               && !e.getAttribute("aria-labelledby")
               && !(e.tagName === "BUTTON" && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 80))"""
# Every Content-Security-Policy refusal, said on the console as an error
# (Chromium's own line about it can be a warning, or missing for a refused
# inline style): added before any page script runs.
REPORT_CSP = """document.addEventListener("securitypolicyviolation", e =>
  console.error(`CSP violation: ${e.effectiveDirective} refused ${e.blockedURI || "inline"}`))"""
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
PHONE = {"width": 390, "height": 844}


@contextlib.asynccontextmanager
async def linkflow_up(
    servers: Servers,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, str] | None = None,
) -> AsyncIterator[tuple[str, str, str, str]]:
    """``linkflow up`` on the test's servers: (app URL, gateway URL,
    webhooks API URL, admin key). The webhooks API's URL is the one
    ``linkflow up`` sets from its port (LINKFLOW_WEBHOOKS_URL)."""
    ports = service_ports()
    gateway = f"http://127.0.0.1:{ports['LINKFLOW_LINK_PORT']}"
    analytics = f"http://127.0.0.1:{ports['LINKFLOW_ANALYTICS_PORT']}"
    webhooks = f"http://127.0.0.1:{ports['LINKFLOW_WEBHOOKS_PORT']}"
    env = {
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        "LINKFLOW_PUBLIC_URL": gateway,
        "LINKFLOW_APP_URL": analytics,
        **ports,
        **(extra or {}),
    }
    monkeypatch.delenv("LINKFLOW_WEBHOOKS_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with supervised(tmp_path):

        async def ready() -> bool:
            async with httpx.AsyncClient(timeout=2) as c:
                for url in (gateway, analytics, webhooks):
                    try:
                        if (await c.get(f"{url}/readyz")).status_code != 200:
                            return False
                    except httpx.HTTPError:
                        return False
            return True

        await eventually(ready, 60, "every service ready")
        key = (tmp_path / "admin.key").read_text().strip()
        yield f"{analytics}/app/", gateway, webhooks, key


@pytest.fixture
async def stack(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, str, str]]:
    """``linkflow up`` on the test's servers: (app URL, gateway URL, admin
    key). After ``nc``, whose set-up empties JetStream for the test."""
    async with linkflow_up(servers, db_url, tmp_path, monkeypatch) as (app, gateway, _, key):
        yield app, gateway, key


@pytest.fixture
async def webhooks_stack(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, str, str, str]]:
    """``linkflow up`` whose webhooks may be delivered to this machine over
    plain HTTP (the test's receiver): (app, gateway, webhooks API, admin key)."""
    allow = {"LINKFLOW_WEBHOOKS_ALLOW_HTTP": "true", "LINKFLOW_WEBHOOKS_ALLOW_PRIVATE": "true"}
    async with linkflow_up(servers, db_url, tmp_path, monkeypatch, allow) as up:
        yield up


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on this machine: answers 200, keeps what it got."""

    got: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """(its URL, what it received)."""
    got: list[tuple[dict[str, str], bytes]] = []
    handler = type("Handler", (Receiver,), {"got": got})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def signed(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether a delivery is signed with ``secret`` (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    mine = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(s.split(",", 1)[-1], mine) for s in headers["webhook-signature"].split()
    )


class Watch:
    """Console errors and failed requests of a page, and its screenshots."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        # What the page's Content-Security-Policy refused, and every origin
        # it asked anything of (its own, and the gateway's for the app).
        self.csp: list[str] = []
        self.origins: set[str] = set()
        self.shots: list[Path] = []
        # Refusals a step asks for on purpose: status -> how many (the
        # response, and Chromium's console line about it).
        self.expected: dict[int, int] = {}
        self.reloading = False
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("request", self._request)

    def expect(self, status: int) -> None:
        self.expected[status] = self.expected.get(status, 0) + 2

    def _expected(self, status: int) -> bool:
        if self.expected.get(status, 0) > 0:
            self.expected[status] -= 1
            return True
        return False

    def _request(self, request: Request) -> None:
        if request.url.startswith(("http://", "https://")):
            self.origins.add(re.sub(r"^(https?://[^/]+).*", r"\1", request.url))

    def _console(self, msg: ConsoleMessage) -> None:
        if "CSP violation" in msg.text or "Content Security Policy" in msg.text:
            self.csp.append(msg.text)
        if msg.type != "error":
            return
        refused = re.search(r"status of (\d{3})", msg.text)
        if refused and self._expected(int(refused.group(1))):
            return
        self.errors.append(f"console: {msg.text}")

    def _failed(self, request: Request) -> None:
        # The live stream is cut on purpose when its page is left, and a
        # reload the test asks for cuts what is in flight.
        aborted = "ERR_ABORTED" in (request.failure or "")
        if aborted and ("/api/stream/" in request.url or self.reloading):
            return
        self.errors.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: object) -> None:
        status = getattr(response, "status", 0)
        if status >= 400 and not self._expected(status):
            self.errors.append(f"HTTP {status}: {getattr(response, 'url', '')}")

    async def shot(self, step: str, alert: bool = False, part: Locator | None = None) -> None:
        """A screenshot of the page (or of ``part`` of it); unless ``alert``,
        it shows no error."""
        if step != "FAILED":
            if not alert:
                await expect(self.page.locator("#alert")).to_be_hidden()
            # Every control a user can reach has a label a screen reader reads.
            unlabelled = await self.page.evaluate(UNLABELLED)
            assert unlabelled == [], (step, unlabelled)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{len(self.shots) + 1:02d}-{step}.png"
        if part is None:
            await self.page.screenshot(path=path, full_page=True)
        else:
            await part.screenshot(path=path)
        self.shots.append(path)


async def watched(
    browser: Browser,
    name: str,
    app: str,
    gateway: str,
    steps: Callable[[Page, Watch], Awaitable[None]],
    others: frozenset[str] = frozenset(),
) -> None:
    """``steps`` on a new page, watched (a screenshot when one fails): no
    console error, no failed request, nothing the CSP refuses, no origin
    asked but the app's, the gateway's and ``others``."""
    page = await browser.new_page()
    await page.add_init_script(REPORT_CSP)
    watch = Watch(page, name)
    try:
        await steps(page, watch)
    except BaseException:
        await watch.shot("FAILED")
        raise
    assert watch.errors == [], watch.errors
    assert watch.csp == [], watch.csp
    assert watch.origins == {app.removesuffix("/app/"), gateway, *others}, watch.origins


async def new_key(nc: Client, app: str, name: str, scopes: tuple[str, ...]) -> str:
    """A new API key, once analytics knows it."""
    made = await keys.create(nc.jetstream(), name, scopes)
    api = app.removesuffix("/app/")

    async def known() -> bool:  # every service follows the keys' bucket: a moment
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {made}"}) as c:
            return (await c.get(f"{api}/api/session")).status_code == 200

    # Analytics runs at nice 19 (redirects first): with the other test
    # process keeping both CPUs busy, its moment can be seconds.
    await eventually(known, 30, "analytics to know the new key")
    return made


async def signed_in(page: Page, name: str, app: str, key: str) -> Watch:
    """``page`` watched, signed in to the app with ``key``."""
    await page.add_init_script(REPORT_CSP)
    watch = Watch(page, name)
    await page.goto(app)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    return watch


async def test_a_user_walks_through_the_web_app(
    browser: Browser,
    stack: tuple[str, str, str],
    nc: Client,
    db_url: str,
) -> None:
    app, gateway, key = stack
    await watched(browser, "webapp", app, gateway, lambda p, w: walk(p, w, app, gateway, key, nc))

    # A key that may only read is offered no writing and no operations.
    viewer = await new_key(nc, app, "viewer", (keys.LINKS_READ, keys.STATS_READ))
    # 25 more links (through the API), so that the list has a second page.
    csv = "url,code\n" + "".join(f"https://example.com/p{i},page{i:02d}\n" for i in range(25))
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.post(
            f"{gateway}/api/links/import", content=csv, headers={"content-type": "text/csv"}
        )
        assert r.json()["imported"] == 25, r.text
    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    reader = await context.new_page()
    reader_watch = await signed_in(reader, "viewer", app, viewer)
    nav = reader.get_by_role("navigation")
    await expect(nav.get_by_role("link", name="Links")).to_be_visible()
    await expect(nav.get_by_role("link", name="Import")).to_be_hidden()
    await expect(nav.get_by_role("link", name="Operations")).to_be_hidden()
    await expect(nav.get_by_role("link", name="Webhooks")).to_be_hidden()
    await expect(nav.get_by_role("link", name="Domains")).to_be_hidden()
    await nav.get_by_role("link", name="Links").click()
    rows = reader.locator("#links tbody tr")
    await expect(rows).to_have_count(20)  # newest first, a page of 20
    await expect(reader.get_by_role("link", name="New link")).to_have_count(0)
    await reader.get_by_role("button", name="Next page").click()
    await expect(rows).to_have_count(27)  # the 25, promo and imp-c: every live link
    await expect(reader.get_by_role("button", name="Next page")).to_be_hidden()
    # Copy: one click puts the short URL on the clipboard.
    await reader.get_by_role("button", name=f"copy {gateway}/promo").click()
    assert await reader.evaluate("navigator.clipboard.readText()") == f"{gateway}/promo"
    await expect(reader.get_by_role("button", name=f"copy {gateway}/promo")).to_have_text("Copied")
    await reader.get_by_role("link", name="promo").click()
    await expect(reader.locator("#clicks")).to_have_text("2")
    await expect(reader.get_by_role("link", name="Edit")).to_have_count(0)
    await expect(reader.get_by_role("button", name="Delete")).to_have_count(0)
    await reader_watch.shot("read-only")
    assert reader_watch.errors == [], reader_watch.errors
    assert reader_watch.csp == [], reader_watch.csp

    # The same app on a phone's screen: the links list fits, no sideways scroll.
    phone = await browser.new_page(viewport=PHONE)
    phone_watch = await signed_in(phone, "phone", app, key)
    await phone.get_by_role("link", name="Links").click()
    await expect(phone.locator("#links tbody tr")).to_have_count(20)
    await phone_watch.shot("links")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    assert phone_watch.errors == [], phone_watch.errors
    assert phone_watch.csp == [], phone_watch.csp


async def test_a_link_with_a_password_an_ab_split_and_a_social_preview(
    browser: Browser, stack: tuple[str, str, str]
) -> None:
    """The link form's UTM builder, A/B destinations, password and preview
    card; the password form visitors see; each destination's figures; both
    exports downloaded."""
    app, gateway, key = stack
    site = app.removesuffix("/app/")
    recorder = f"http://127.0.0.1:{os.environ['LINKFLOW_CLICK_RECORDER_PORT']}"

    async def steps(page: Page, watch: Watch) -> None:
        await page.goto(app)
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        await page.get_by_role("link", name="Links").click()
        await page.get_by_role("link", name="New link").click()

        # UTM parameters go into the target as they are typed.
        await page.get_by_label("Target URL").fill(f"{site}/app/?from=ab")
        await page.get_by_text("UTM parameters").click()
        await page.get_by_label("utm_source").fill("newsletter")
        await page.get_by_label("utm_medium").fill("email")
        await page.get_by_label("utm_campaign").fill("spring sale")
        await expect(page.get_by_label("Target URL")).to_have_value(
            f"{site}/app/?from=ab&utm_source=newsletter&utm_medium=email&utm_campaign=spring+sale"
        )
        await page.get_by_label("utm_medium").fill("")
        await expect(page.get_by_label("Target URL")).to_have_value(
            f"{site}/app/?from=ab&utm_source=newsletter&utm_campaign=spring+sale"
        )
        await watch.shot("utm-builder", part=page.locator("#link"))
        await page.get_by_label("Code").fill("ab-launch")

        # Two destinations, 1:3.
        for _ in range(2):
            await page.get_by_role("button", name="Add a destination").click()
        await page.get_by_label("destination 1 URL").fill(f"{site}/app/?side=a")
        await page.get_by_label("destination 2 URL").fill(f"{site}/app/?side=b")
        await page.get_by_label("destination 2 weight").fill("3")
        await page.get_by_label("Password").fill("correct horse battery")

        # The preview card shows what a chat app will, every value as text.
        await page.get_by_text("Social preview").click()
        title = 'Spring <launch> "now"'
        await page.get_by_label("Title").fill(title)
        await page.get_by_label("Description").fill("<b>Half</b> off & more")
        await page.get_by_label("Image URL").fill(f"{site}/app/linkflow.svg")
        card = page.locator("#preview-card")
        await expect(card.locator("strong")).to_have_text(title)
        await expect(card.locator(".description")).to_have_text("<b>Half</b> off & more")
        await expect(card.locator("img")).to_have_js_property("complete", True)
        assert await card.locator("img").evaluate("img => img.naturalWidth") > 0
        await expect(card.locator(".host")).to_have_text(gateway.removeprefix("http://"))
        await watch.shot("preview-card", part=card)
        await page.get_by_role("button", name="Create").click()

        await expect(page.get_by_role("heading", name="ab-launch")).to_be_visible()
        summary = page.locator("#summary")
        for note in ("A/B split over 2 destinations", "password protected", "social preview"):
            await expect(summary).to_contain_text(note)

        # A visitor gets the password form (no script, nothing of the target),
        # a wrong password the form again, the right one its destination.
        visitor = await browser.new_page()
        await visitor.add_init_script(REPORT_CSP)
        form = Watch(visitor, "password")
        await visitor.goto(f"{gateway}/ab-launch")
        await expect(visitor.get_by_label("Password")).to_be_focused()
        assert "side=" not in await visitor.content()
        await form.shot("form")
        form.expect(401)
        await visitor.get_by_label("Password").fill("wrong password")
        await visitor.get_by_role("button", name="Open the link").click()
        await expect(visitor.get_by_role("alert")).to_contain_text("not right")
        await visitor.get_by_label("Password").fill("correct horse battery")
        await visitor.get_by_role("button", name="Open the link").click()
        await visitor.wait_for_url(re.compile(r".*/app/\?side=[ab]"))
        assert form.errors == [], form.errors
        await visitor.close()

        # Seven more visitors, each their own (a user agent each).
        async with httpx.AsyncClient() as c:
            for i in range(7):
                r = await c.post(
                    f"{gateway}/ab-launch",
                    data={"password": "correct horse battery"},
                    headers={"user-agent": f"Mozilla/5.0 (X11; Linux x86_64) Firefox/{100 + i}.0"},
                )
                assert r.status_code == 303, r.text

        # Each destination's clicks and visitors, summing to the eight (the
        # headless browser's own click counts as a bot's: shown with them).
        await page.get_by_label("Show bots").check()
        split = page.locator("#split tbody tr")
        await expect(split).to_have_count(2)
        await expect(split.nth(0).locator("td").first).to_have_text(f"{site}/app/?side=a")

        async def counted() -> int:
            await page.get_by_role("button", name="Show").click()
            cells = await page.locator("#split tbody tr td:nth-child(3)").all_inner_texts()
            return sum(int(c) for c in cells)

        await eventually(lambda: _equals(counted, 8), 30, "8 clicks over the destinations")
        await watch.shot("destinations")

        # Both exports, saved by the browser under the server's file names.
        async with page.expect_download() as figures:
            await page.get_by_role("button", name="Export figures (CSV)").click()
        text = Path(await (await figures.value).path()).read_text()
        assert "section,key,count,visitors" in text.splitlines()[0], text[:200]
        assert (
            sum(
                int(line.split(",")[2])
                for line in text.splitlines()
                if line.startswith("destinations,")
            )
            == 8
        )
        async with page.expect_download() as clicks:
            await page.get_by_role("button", name="Export clicks (CSV)").click()
        download = await clicks.value
        assert download.suggested_filename.startswith("clicks_"), download.suggested_filename
        lines = Path(await download.path()).read_text().splitlines()
        assert len(lines) == 9, lines[:3]  # a header and the eight clicks
        assert "destination" in lines[0].split(",")

        # Editing shows what the link has (the password only as protected),
        # and saving it unchanged keeps all of it.
        await page.get_by_role("link", name="Edit").click()
        await expect(page.get_by_label("destination 2 URL")).to_have_value(f"{site}/app/?side=b")
        await expect(page.get_by_label("destination 2 weight")).to_have_value("3")
        await expect(page.get_by_label("Title")).to_have_value(title)
        await expect(page.get_by_label("utm_source")).to_have_value("newsletter")
        await expect(page.get_by_label("Remove the password")).not_to_be_checked()
        password = page.get_by_label("Password (empty: unchanged)")
        await expect(password).to_have_value("")
        await expect(password).to_have_attribute("placeholder", "protected: type to replace")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("heading", name="ab-launch")).to_be_visible()
        for note in ("version 2", "A/B split over 2 destinations", "password protected"):
            await expect(page.locator("#summary")).to_contain_text(note)

    await watched(browser, "link-extras", app, gateway, steps, frozenset({recorder}))


async def _equals(read: Callable[[], Awaitable[int]], want: int) -> bool:
    return await read() == want


async def test_the_webhooks_page_manages_endpoints(
    browser: Browser,
    webhooks_stack: tuple[str, str, str, str],
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    """The Webhooks page against the webhooks service's API, cross-origin:
    an endpoint created (its secret shown once), a test event delivered to a
    receiver on this machine and its attempt shown, then the endpoint
    disabled, its secret rotated and the endpoint deleted."""
    app, gateway, webhooks, key = webhooks_stack
    hook, got = receiver
    page = await browser.new_page()
    await page.add_init_script(REPORT_CSP)
    watch = Watch(page, "webhooks")
    try:
        response = await page.goto(app)
        assert response is not None
        policy = await response.header_value("content-security-policy")
        assert policy is not None
        # And the click-recorder's export, at the URL linkflow up gives it.
        recorder = f"http://127.0.0.1:{os.environ['LINKFLOW_CLICK_RECORDER_PORT']}"
        assert f"connect-src 'self' {gateway} {webhooks} {recorder};" in policy
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("navigation").get_by_role("link", name="Webhooks").click()
        await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
        endpoints = page.locator("#endpoints tbody tr")
        await expect(endpoints).to_have_text("no endpoints yet")

        # No event chosen: the API's refusal is shown by the events.
        await page.get_by_label("Endpoint URL").fill(hook)
        await page.get_by_label("link.clicked").uncheck()
        watch.expect(422)
        await page.get_by_role("button", name="Create endpoint").click()
        await expect(page.locator(".field-error")).to_contain_text("events")
        await expect(page.get_by_role("alert")).to_be_visible()
        await watch.shot("create-refused", alert=True)

        # Created: its secret shown once, clearly marked.
        await page.get_by_label("link.clicked").check()
        await page.get_by_label("link.created").check()
        await page.get_by_label("Codes").fill("promo, sale")
        await page.get_by_label("Description").fill("browser test")
        await page.get_by_role("button", name="Create endpoint").click()
        box = page.locator("#secret")
        await expect(box).to_contain_text("Shown once: store it now.")
        secret = await page.locator("#secret-value").text_content()
        assert secret is not None
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{32,}", secret), secret
        row = endpoints.filter(has_text=hook)
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("link.created, link.clicked")
        await expect(row).to_contain_text("promo")
        await expect(row).to_contain_text("enabled")
        await watch.shot("created")
        # Never again: not after a reload.
        watch.reloading = True
        await page.reload()
        await expect(row).to_have_count(1)
        watch.reloading = False
        await expect(box).to_be_hidden()
        assert secret not in await page.content()

        # A test event, delivered to the receiver signed with that secret;
        # the delivery shows as delivered, with its one attempt.
        await row.get_by_role("button", name="Send test event").click()
        await expect(page.get_by_role("status")).to_contain_text("Test event msg_")
        deliveries = page.locator("#deliveries tbody tr")
        await expect(deliveries).to_have_count(1)
        await expect(deliveries.first).to_contain_text("webhook.test")
        await expect(deliveries.first).to_contain_text("delivered", timeout=20000)
        await expect(deliveries.first).to_contain_text("HTTP 200")
        assert len(got) == 1, got
        headers, body = got[0]
        assert b'"type":"webhook.test"' in body
        assert signed(secret, headers, body)
        await deliveries.first.get_by_role("button", name="Attempts").click()
        attempts = page.locator("#attempts tbody tr")
        await expect(attempts).to_have_count(1)
        await expect(attempts.first).to_contain_text("200")
        await expect(page.locator("#delivery-summary")).to_contain_text("delivered")
        await watch.shot("delivery")

        # Filtered by status; retried on demand (delivered a second time).
        await page.get_by_label("Status").select_option("failed")
        await expect(deliveries).to_have_text("no deliveries")
        await page.get_by_label("Status").select_option("")
        await expect(deliveries).to_have_count(1)
        await deliveries.first.get_by_role("button", name="Retry").click()
        await expect(page.get_by_role("status")).to_contain_text("pending again")
        # The list follows a pending delivery until it is done.
        await expect(deliveries.first.locator("td.num")).to_have_text("2", timeout=20000)
        await expect(deliveries.first).to_contain_text("delivered")
        await eventually_received(got, 2)
        await deliveries.first.get_by_role("button", name="Attempts").click()
        await expect(attempts).to_have_count(2)

        # Disabled, enabled again.
        await row.get_by_role("button", name="Disable").click()
        await expect(row).to_contain_text("disabled")
        await row.get_by_role("button", name="Enable").click()
        await expect(row).to_contain_text("enabled")

        # A rotation asks first, then shows the new secret once.
        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Rotate secret").click()
        await expect(box).to_contain_text("Rotated")
        rotated = await page.locator("#secret-value").text_content()
        assert rotated is not None
        assert rotated.startswith("whsec_")
        assert rotated != secret
        await watch.shot("rotated")
        await page.get_by_role("button", name="I have stored it").click()
        await expect(box).to_be_hidden()

        # Delete asks first: dismissed, nothing happens; accepted, it is gone.
        page.once("dialog", lambda dialog: dialog.dismiss())
        await row.get_by_role("button", name="Delete").click()
        await expect(row).to_have_count(1)
        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Delete").click()
        await expect(endpoints).to_have_text("no endpoints yet")
        await expect(page.locator("#deliveries-section")).to_be_hidden()
        await watch.shot("deleted")
    except BaseException:
        await watch.shot("FAILED")
        raise
    assert watch.errors == [], watch.errors
    assert watch.csp == [], watch.csp
    # This page's own origin and the webhooks API's (the overview, shown at
    # sign-in, may ask the gateway too).
    assert webhooks in watch.origins, watch.origins
    assert watch.origins <= {app.removesuffix("/app/"), gateway, webhooks}, watch.origins


GO = "go.example.com"


async def test_an_admin_serves_links_on_a_domain_of_their_own(
    browser: Browser, stack: tuple[str, str, str], nc: Client
) -> None:
    """Short domains and orphan visits: a domain added on the Domains page
    (a bad host refused by its field, its redirects edited), a link created
    on it with the picker (its short URL on that domain, its clicks counted
    live and in its stats by domain), the list filtered by domain, the
    domain's deletion refused while it has links (the gateway's reason
    shown); then visits that match no link, on the overview. A key that may
    write links but not list domains sees no Domains page and no picker."""
    app, gateway, key = stack
    await watched(
        browser, "domains", app, gateway, lambda p, w: domains_walk(p, w, app, gateway, key)
    )

    # Links, no admin: no Domains page, no picker, and no call refused.
    writer = await new_key(nc, app, "writer", (keys.LINKS_WRITE, keys.STATS_READ))
    other = await browser.new_page()
    other_watch = await signed_in(other, "writer", app, writer)
    nav = other.get_by_role("navigation")
    await expect(nav.get_by_role("link", name="Import")).to_be_visible()
    await expect(nav.get_by_role("link", name="Domains")).to_be_hidden()
    await nav.get_by_role("link", name="Links").click()
    await expect(other.locator("#links tbody tr")).to_have_count(2)
    await expect(other.get_by_label("Domain")).to_be_hidden()
    await other.get_by_role("link", name="New link").click()
    await expect(other.get_by_label("Target URL")).to_be_visible()
    await expect(other.get_by_label("Domain")).to_be_hidden()
    assert other_watch.errors == [], other_watch.errors
    assert other_watch.csp == [], other_watch.csp


async def domains_walk(page: Page, watch: Watch, app: str, gateway: str, key: str) -> None:
    default = httpx.URL(gateway).host
    await page.goto(app)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("navigation").get_by_role("link", name="Domains").click()
    await expect(page.get_by_role("heading", name="Domains", exact=True)).to_be_visible()
    domains = page.locator("#domains tbody tr")
    await expect(domains).to_have_count(1)
    await expect(domains.first).to_contain_text(f"{default} default")
    await expect(domains.first.get_by_role("button", name="Delete")).to_have_count(0)

    # A host that cannot be one is refused by its field; a good one added.
    new = page.locator("#new-domain")
    await new.get_by_label("Host").fill("not a host")
    watch.expect(422)
    await new.get_by_role("button", name="Add domain").click()
    await expect(new.locator(".field-error")).to_contain_text("host")
    await expect(page.get_by_role("alert")).to_be_visible()
    await new.get_by_label("Host").fill(GO)
    await new.get_by_label("Base URL redirect").fill("https://example.com/home")
    await new.get_by_role("button", name="Add domain").click()
    await expect(page.get_by_role("status")).to_have_text(f"Domain {GO} added.")
    await expect(new.locator(".field-error")).to_have_count(0)
    go = domains.filter(has_text=GO)
    await expect(go).to_contain_text("https://example.com/home")
    await expect(domains).to_have_count(2)
    # Its redirects edited: a visit to a code with no link goes elsewhere too.
    await page.get_by_role("button", name=f"edit the redirects of {GO}").click()
    edit = page.locator("#edit-domain")
    await expect(edit.get_by_label("Base URL redirect")).to_have_value("https://example.com/home")
    await edit.get_by_label("Not-found redirect").fill("https://example.com/lost")
    await edit.get_by_role("button", name="Save redirects").click()
    await expect(edit).to_be_hidden()
    await expect(go).to_contain_text("https://example.com/lost")
    await watch.shot("domains")

    # A link on it, with the create form's picker (the default domain first).
    await page.get_by_role("navigation").get_by_role("link", name="Links").click()
    await page.get_by_role("link", name="New link").click()
    picker = page.get_by_label("Domain")
    await expect(picker.locator("option")).to_have_text([f"{default} (default)", GO])
    await expect(picker).to_have_value("")
    await picker.select_option(GO)
    await page.get_by_label("Target URL").fill("https://example.com/sale")
    await page.get_by_label("Code").fill("sale")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name="sale")).to_be_visible()
    assert page.url.endswith(f"#/links/sale?domain={GO}"), page.url
    short = f"http://{GO}/sale"
    await expect(page.get_by_role("link", name=short)).to_be_visible()
    await expect(page.locator("#qr")).to_have_js_property("complete", True)
    # Its clicks, by its domain: live, then in its stats.
    await expect(page.locator("#live-state")).to_have_text("live, since this page opened")
    async with httpx.AsyncClient(base_url=gateway, headers={"host": GO}) as visitor:
        r = await visitor.get(
            "/sale", headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}
        )
        assert r.status_code == 302, r.text
        assert r.headers["location"] == "https://example.com/sale"
    await expect(page.locator("#live")).to_have_text("1", timeout=15000)
    await expect(page.locator("#clicks")).to_have_text("1", timeout=20000)
    # Edited on its domain; its history is its own.
    await page.get_by_role("link", name="Edit").click()
    assert page.url.endswith(f"#/links/sale/edit?domain={GO}"), page.url
    await page.get_by_label("Target URL").fill("https://example.com/big-sale")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#summary")).to_contain_text("https://example.com/big-sale")
    await expect(page.locator("#history tbody tr")).to_have_count(2)
    # The same code on the default domain is another link.
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.post(
            f"{gateway}/api/links", json={"url": "https://example.com/other", "code": "sale"}
        )
        assert r.status_code == 201, r.text
        assert r.json()["short_url"] == f"{gateway}/sale"

    # The list: every domain's links, or one domain's.
    await page.get_by_role("navigation").get_by_role("link", name="Links").click()
    rows = page.locator("#links tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.filter(has_text=GO)).to_contain_text("https://example.com/big-sale")
    await page.get_by_label("Domain").select_option(GO)
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("https://example.com/big-sale")
    await expect(page.get_by_label("Domain")).to_have_value(GO)
    await expect(rows.first.get_by_role("button", name=f"copy {short}")).to_be_visible()
    await watch.shot("links-on-domain")
    await page.get_by_label("Domain").select_option(default)
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("https://example.com/other")
    # Each one's page is its own: the default domain's has no click.
    await rows.first.get_by_role("link", name="sale").click()
    await expect(page.get_by_role("link", name=f"{gateway}/sale")).to_be_visible()
    await expect(page.locator("#clicks")).to_have_text("0")

    # A domain with links cannot be deleted: the gateway says why.
    await page.get_by_role("navigation").get_by_role("link", name="Domains").click()
    page.once("dialog", lambda dialog: dialog.accept())
    watch.expect(409)
    await page.get_by_role("button", name=f"delete {GO}").click()
    await expect(page.get_by_role("alert")).to_have_text(f"{GO} still has links: delete them first")
    await expect(domains).to_have_count(2)
    await watch.shot("domain-delete-refused", alert=True)

    # Visits that match no link (from here, with the Host a browser would
    # send): / and a missing code on the domain, a path that cannot be a
    # code on the default one.
    async def visit() -> None:
        async with httpx.AsyncClient(base_url=gateway) as visitor:
            on_go = {"host": GO}
            r = await visitor.get("/", headers=on_go)
            assert r.headers["location"] == "https://example.com/home", r.status_code
            r = await visitor.get("/no-such-code", headers=on_go)
            assert r.headers["location"] == "https://example.com/lost", r.status_code
            assert (await visitor.get("/wp-admin/setup.php")).status_code == 404

    api = app.removesuffix("/app/")

    async def stored() -> dict[str, Any] | None:
        """The orphan visits once analytics has whole rounds of them."""
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as c:
            body: dict[str, Any] = (await c.get(f"{api}/api/stats/orphans")).json()
        rounds = body["total"] // 3
        whole = set(body["kinds"].values()) == {rounds} and rounds > 0
        return body if whole else None

    # The gateway sends them once a second over core NATS, fire-and-forget
    # by design: when analytics' connection drops (a starved machine can
    # make its client drop it), that second's visits are lost. Then the
    # same visits again, not a longer wait.
    lost = None
    for _ in range(3):
        await visit()
        with contextlib.suppress(AssertionError):
            lost = await eventually(stored, 15, "the orphan visits stored")
            break
    assert lost is not None, "the orphan visits were never stored"
    rounds = str(lost["total"] // 3)
    await page.get_by_role("navigation").get_by_role("link", name="Overview").click()
    orphans = page.locator("#orphans")
    await expect(orphans.locator("#orphans-total")).to_have_text(str(lost["total"]))
    for kind in ("base-url", "invalid-code", "not-found"):
        await expect(orphans.locator(f"#orphans-{kind}")).to_have_text(rounds)
    paths = orphans.locator("#orphan-paths tbody tr")
    await expect(paths).to_have_count(3)
    await expect(paths.filter(has_text="/no-such-code")).to_contain_text("unknown or deleted codes")
    await expect(paths.filter(has_text="/wp-admin/setup.php")).to_contain_text(
        "paths that cannot be a code"
    )
    # The top links name their domain.
    await expect(page.locator("#top tbody tr").first).to_contain_text(f"sale{GO}")
    await watch.shot("overview")
    await watch.shot("overview-orphans", part=orphans)


async def eventually_received(got: list[tuple[dict[str, str], bytes]], n: int) -> None:
    async def enough() -> bool:
        return len(got) >= n

    await eventually(enough, 10, f"{n} deliveries received")


async def test_the_api_docs_run_under_the_csp(
    browser: Browser, stack: tuple[str, str, str]
) -> None:
    """Both services' Swagger UI, from their own origin: nothing loaded from
    anywhere else, nothing the Content-Security-Policy refuses."""
    app, gateway, _ = stack
    for name, origin in (("gateway", gateway), ("analytics", app.removesuffix("/app/"))):
        page = await browser.new_page()
        await page.add_init_script(REPORT_CSP)
        watch = Watch(page, f"docs-{name}")
        response = await page.goto(f"{origin}/api/docs")
        assert response is not None
        policy = await response.header_value("content-security-policy")
        assert policy is not None
        assert "script-src 'self';" in policy
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            f"linkflow {name}", timeout=15000
        )
        # An operation opens with its parameters: the UI works, not only draws.
        await page.locator(".opblock-summary").first.click()
        await expect(page.locator(".opblock-body").first).to_be_visible()
        # Not watch.shot: Swagger UI's own controls are not the web app's to label.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=ARTIFACTS / f"docs-{name}.png", full_page=True)
        assert watch.errors == [], watch.errors
        assert watch.csp == [], watch.csp
        assert watch.origins == {origin}, watch.origins
        await page.close()


async def walk(page: Page, watch: Watch, app: str, gateway: str, key: str, nc: Client) -> None:
    # Sign in: a wrong key is refused with the API's reason.
    response = await page.goto(app)
    # The page runs under a strict policy that lets it call the gateway.
    assert response is not None
    policy = await response.header_value("content-security-policy")
    assert policy is not None
    assert "script-src 'self';" in policy
    # (and the webhooks API: test_the_webhooks_page_manages_endpoints).
    assert f"connect-src 'self' {gateway} " in policy
    await expect(page.get_by_label("API key")).to_be_focused()
    await watch.shot("sign-in")
    watch.expect(401)
    await page.get_by_label("API key").fill("lf_wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("unknown API key")
    assert await page.evaluate("sessionStorage.getItem('linkflow-key')") is None
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('linkflow-key')") == key
    assert await page.evaluate("document.cookie") == ""
    assert key not in await page.content()
    # An admin key may do everything.
    for section in ("Links", "Import", "Operations", "Webhooks"):
        await expect(
            page.get_by_role("navigation").get_by_role("link", name=section)
        ).to_be_visible()
    await watch.shot("overview")

    # Create a link with its fields; a bad field is named next to it.
    await page.get_by_role("link", name="Links").click()
    await page.get_by_role("link", name="New link").click()
    await page.get_by_label("Target URL").fill("https://example.com/spring")
    await page.get_by_label("Code").fill("promo")
    await page.get_by_label("Tags").fill("spring, print")
    await page.get_by_label("Visit limit").fill("1000")
    await page.get_by_label("Redirect rules").fill(
        '[{"when": {"os": ["beos"]}, "url": "https://example.com/x"}]'
    )
    watch.expect(422)  # the refusal is the point
    await page.get_by_role("button", name="Create").click()
    await expect(page.locator(".field-error")).to_contain_text("rules[0].when.os")
    await expect(page.get_by_role("alert")).to_contain_text("rules[0].when.os")
    await watch.shot("create-refused", alert=True)
    await page.get_by_label("Redirect rules").fill(
        '[{"when": {"os": ["ios"]}, "url": "https://apps.example/ios"}]'
    )
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name="promo")).to_be_visible()
    short = f"{gateway}/promo"
    await expect(page.get_by_role("link", name=short)).to_be_visible()
    await expect(page.locator("#qr")).to_have_js_property("complete", True)
    assert await page.locator("#qr").evaluate("img => img.naturalWidth") > 0

    # Follow it as a visitor would, once the page says its live counter is
    # live; the live counter and the chart show the click.
    await expect(page.locator("#live-state")).to_have_text("live, since this page opened")
    async with httpx.AsyncClient() as visitor:
        r = await visitor.get(
            short, headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}
        )
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.com/spring"
    await expect(page.locator("#live")).to_have_text("1", timeout=15000)
    await expect(page.locator("#clicks")).to_have_text("1", timeout=20000)
    await expect(page.locator("#visitors")).to_have_text("1")
    await expect(page.locator("#chart canvas")).to_be_visible()
    await watch.shot("link-analytics")

    # Edit it; the history shows both versions, by the key's name.
    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Target URL").fill("https://example.com/summer")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#summary")).to_contain_text("https://example.com/summer")
    history = page.locator("#history tbody tr")
    await expect(history).to_have_count(2)
    await expect(history.first).to_contain_text("https://example.com/summer")
    await expect(history.first).to_contain_text("admin")
    await watch.shot("history")

    # Import a CSV with one bad row: the good ones land, the bad one is reported.
    await page.get_by_role("link", name="Import").click()
    await page.get_by_label("CSV file").set_input_files(
        files=[
            {
                "name": "links.csv",
                "mimeType": "text/csv",
                "buffer": b"url,code\nhttps://example.com/a,imp-a\nnot a url,imp-b\nhttps://example.com/c,imp-c\n",
            }
        ]
    )
    await page.get_by_role("button", name="Import").click()
    await expect(page.get_by_role("status")).to_contain_text("2 imported")
    errors = page.locator("#import-errors tbody tr")
    await expect(errors).to_have_count(1)
    await expect(errors.first).to_contain_text("3")
    await watch.shot("import")

    # Search the list (promo among the imported links).
    await page.get_by_role("link", name="Links").click()
    await page.get_by_label("Search").fill("summer")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#links tbody tr")).to_have_count(1)
    await expect(page.get_by_role("link", name="promo")).to_be_visible()
    await watch.shot("links")
    # Filter by tag (alone): promo has "print".
    await page.get_by_label("Search").fill("")
    await page.get_by_label("Tag").fill("print")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#links tbody tr")).to_have_count(1)
    await expect(page.get_by_role("link", name="promo")).to_be_visible()

    # Replay a dead letter: the click it held is counted.
    held = human("promo")
    await dead_letter_a_click(nc, held)
    # A gateway says it is busy: the page says why the lag may grow.
    async with busy_gateway(nc):
        await page.get_by_role("link", name="Operations").click()
        await expect(page.locator("#redirects-busy")).to_contain_text(
            "Gateway test:1 is busy (load 0.97)", timeout=15000
        )
    row = page.locator("#dlq tbody tr", has_text="database down")
    await expect(row).to_have_count(1, timeout=10000)
    await expect(page.locator("#pipeline tbody tr").first).to_be_visible()
    await expect(page.locator("#lag-chart canvas")).to_be_visible()
    await expect(page.locator("#pending-chart canvas")).to_be_visible()
    await watch.shot("operations")
    await row.get_by_role("button", name="Replay").click()
    await expect(row).to_have_count(0)
    # Another one discarded; a backfill started, shown with its progress.
    await dead_letter_a_click(nc, human("promo", user_agent="discard-me"))
    other = page.locator("#dlq tbody tr", has_text="database down")
    await expect(other).to_have_count(1, timeout=10000)
    await other.get_by_role("button", name="Discard").click()
    await expect(other).to_have_count(0)
    # Its hold over, the next refresh (every 5 s) says so.
    await expect(page.locator("#redirects-busy")).to_contain_text(
        "No gateway is busy", timeout=20000
    )
    await page.get_by_label("From").fill("2026-01-01T00:00")
    await page.get_by_label("To").fill("2099-01-01T00:00")
    await page.get_by_role("button", name="Start").click()
    await expect(page.locator("#backfills tbody tr").first).to_contain_text("/")
    await expect(page.locator("#backfills tbody tr").first).to_contain_text(
        re.compile("pending|running|done")
    )
    await page.goto(f"{app}#/links/promo")
    await expect(page.locator("#clicks")).to_have_text("2", timeout=20000)
    await watch.shot("after-replay")
    # Per day, bots shown: the same two clicks (none was a bot), one day's point.
    await page.get_by_label("Per").select_option("day")
    await page.get_by_label("Show bots").check()
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#clicks")).to_have_text("2")
    # A range that ends before the clicks: none.
    await page.get_by_label("From").fill("2025-12-01T00:00")
    await page.get_by_label("To").fill("2026-01-01T00:00")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#clicks")).to_have_text("0")

    # Delete asks first: dismissed, nothing happens; accepted, the link is gone.
    await page.goto(f"{app}#/links/imp-a")
    await expect(page.get_by_role("heading", name="imp-a")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.dismiss())
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="imp-a")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="Links")).to_be_visible()
    await expect(page.get_by_role("link", name="imp-c")).to_be_visible()
    await expect(page.get_by_role("link", name="imp-a")).to_have_count(0)

    # A reload in the same tab keeps the session; sign-out forgets it.
    await page.goto(f"{app}#/links/promo")
    await expect(page.locator("#clicks")).to_have_text("2")
    watch.reloading = True
    await page.reload()
    await expect(page.locator("#clicks")).to_have_text("2")
    watch.reloading = False
    # The overview now has them: promo's two clicks on top, three links created.
    await page.get_by_role("link", name="Overview").click()
    await expect(page.locator("#top tbody tr").first).to_contain_text("promo")
    await expect(page.locator("#total")).to_have_text("2")
    await expect(page.locator("#created-total")).to_have_text("3", timeout=10000)
    await watch.shot("overview-with-data")

    # Sign out: the key is gone and the app asks for one again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('linkflow-key')") is None
    watch.reloading = True
    await page.reload()
    await expect(page.get_by_label("API key")).to_be_visible()
    watch.reloading = False
    await expect(page.get_by_role("navigation")).to_be_hidden()
    await watch.shot("signed-out")
    assert len(watch.shots) >= 9
