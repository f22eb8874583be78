"""What a visitor of a password-protected link sees and keeps: the password
form, and the cookie that remembers a right password for 24 hours.

The cookie is ``<day>.<expires>.<mac>``: HMAC-SHA256, under the key of the
UTC day it was made, of the link's key, its expiry and the link's password
hash (so a new password forgets every remembered one; the hash itself is
never in the cookie). The day's key is 32 random bytes in the KV bucket
``visitor_salts`` (``unlock.<day>``), made by the first gateway that needs
it exactly as a day's visitor salt is, and deleted by the server at the end
of the next day: a cookie is checked with the key it names, so keys rotate
every day and every replica checks every other's cookies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Final
from urllib.parse import parse_qs

from nats.js.kv import KeyValue
from starlette.types import Receive, Scope, Send

from services.link.payloads import MAX_PASSWORD
from services.link.visitors import AHEAD, CHECK_EVERY, day_of, shared_secret
from shared.http.problems import Problem
from shared.jetstream.loops import Loop, periodic

COOKIE: Final = "linkflow_unlock"
REMEMBER: Final = 24 * 3600
# A form with one password field is far smaller; a slow body is cut too.
MAX_BODY: Final = 4096
READ_TIMEOUT: Final = 10.0
_FORM_TYPE: Final = b"application/x-www-form-urlencoded"


class UnlockKeys:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._keys: dict[str, bytes] = {}

    async def prepare(self, now: datetime | None = None) -> None:
        """Today's key, yesterday's (its cookies live on) and, within the last
        hour of today, tomorrow's; older ones forgotten."""
        now = now or datetime.now(UTC)
        days = [now - timedelta(days=1), now]
        if (now + timedelta(seconds=AHEAD)).date() != now.date():
            days.append(now + timedelta(days=1))
        for at in days:
            day = day_of(at)
            if day not in self._keys:
                start = datetime(at.year, at.month, at.day, tzinfo=UTC)
                self._keys[day] = await shared_secret(
                    self._kv, f"unlock.{day}", start + timedelta(days=2)
                )
        keep = {day_of(at) for at in days}
        for day in list(self._keys):
            if day not in keep:
                del self._keys[day]

    def loop(self) -> Loop:
        return periodic("unlock cookie keys", CHECK_EVERY, self.prepare)

    def _mac(self, day: str, key: str, expires: int, digest: str) -> str | None:
        secret = self._keys.get(day)
        if secret is None:
            return None
        message = f"{key}\x00{expires}\x00{digest}".encode("utf-8", "surrogateescape")
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    def issue(self, key: str, digest: str) -> str | None:
        """A cookie's value for link ``key`` whose hash is ``digest``; None
        without today's key (NATS unreachable at midnight): not remembered."""
        expires = int(time.time()) + REMEMBER
        day = day_of(datetime.now(UTC))
        mac = self._mac(day, key, expires, digest)
        return None if mac is None else f"{day}.{expires}.{mac}"

    def admits(self, cookie_header: bytes, key: str, digest: str) -> bool:
        """Whether a ``Cookie`` header holds a valid cookie for the link."""
        now = int(time.time())
        for pair in cookie_header.decode("latin-1").split(";"):
            name, _, value = pair.strip().partition("=")
            if name != COOKIE:
                continue
            day, _, rest = value.partition(".")
            expires, _, mac = rest.partition(".")
            if not expires.isdigit() or not now < int(expires) <= now + REMEMBER:
                continue
            want = self._mac(day, key, int(expires), digest)
            if want is not None and hmac.compare_digest(want, mac):
                return True
        return False


async def read_password(scope: Scope, receive: Receive) -> str:
    """The ``password`` field of a form POST ("" if absent or too long to
    be any link's); a body that is no such form is refused."""
    kind = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    if kind.split(b";")[0].strip().lower() != _FORM_TYPE:
        raise Problem(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    raise Problem(400, "the request ended before its body")
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_BODY:
                    raise Problem(413, f"the form is over {MAX_BODY} bytes")
    except TimeoutError:
        raise Problem(408, f"the form did not arrive within {READ_TIMEOUT:.0f} s") from None
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:
        raise Problem(400, "the form has too many fields") from None
    password = fields.get("password", [""])[0]
    return password if len(password) <= MAX_PASSWORD else ""


async def send_form(
    scope: Scope,
    send: Send,
    status: int,
    short_url: str,
    error: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = form(short_url, error)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"cache-control", b"no-store"),
                (b"x-robots-tag", b"noindex"),
                (b"content-security-policy", POLICY),
                (b"referrer-policy", b"no-referrer"),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def set_cookie(value: str, code: str, secure: bool) -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` header: for this link's path alone."""
    flags = f"; Max-Age={REMEMBER}; Path=/{code}; HttpOnly; SameSite=Lax"
    return b"set-cookie", f"{COOKIE}={value}{flags}{'; Secure' if secure else ''}".encode()


# Inline CSS is allowed by this page's own policy; nothing else is.
POLICY: Final = (
    b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
)
_STYLE: Final = """
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1b1b1b;background:#f4f6f9}
main{max-width:24rem;margin:12vh auto;padding:1.5rem;background:#fff;
border:1px solid #d0d0d0;border-radius:8px}
h1{font-size:1.25rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin-bottom:.25rem}
input{box-sizing:border-box;width:100%;padding:.5rem;font:inherit;
border:1px solid #767676;border-radius:4px}
button{margin-top:1rem;padding:.5rem 1rem;font:inherit;color:#fff;
background:#0b57d0;border:0;border-radius:4px;cursor:pointer}
input:focus,button:focus{outline:3px solid #f5a623;outline-offset:2px}
p[role=alert]{color:#b3261e;background:#fdecea;padding:.5rem;border-radius:4px}
"""


def form(short_url: str, error: str | None = None) -> bytes:
    """The password form; it posts back to the short URL (its own address,
    with any ``?domain=`` or query kept by the browser), never the target."""
    alert = f'<p role="alert" id="error">{escape(error)}</p>\n' if error else ""
    described = ' aria-describedby="error" aria-invalid="true"' if error else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>Password required</title>\n<style>{_STYLE}</style>\n</head><body><main>\n"
        "<h1>This link is protected</h1>\n"
        f"<p>Enter the password to open {escape(short_url, quote=True)}.</p>\n{alert}"
        '<form method="post">\n'
        '<label for="password">Password</label>\n'
        '<input id="password" name="password" type="password" required '
        f'autocomplete="current-password" autofocus maxlength="128"{described}>\n'
        '<button type="submit">Open the link</button>\n'
        "</form>\n</main></body></html>\n"
    ).encode()
