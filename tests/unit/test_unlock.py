"""The password form and the cookie that remembers a right password."""

from __future__ import annotations

import time

from services.link.unlock import COOKIE, UnlockKeys, form, set_cookie

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def keys(**held: bytes) -> UnlockKeys:
    made = UnlockKeys(kv=None)  # type: ignore[arg-type]  # prepare() is not called
    made._keys = dict(held)
    return made


def test_the_form_is_plain_accessible_html_without_script() -> None:
    page = form("http://sho.rt/vault", "That password is not right.").decode()
    assert '<label for="password">Password</label>' in page
    assert 'name="password" type="password"' in page
    assert 'aria-invalid="true"' in page
    assert '<p role="alert" id="error">That password is not right.</p>' in page
    assert "<script" not in page
    assert 'role="alert"' not in form("http://sho.rt/vault").decode()
    assert "&lt;b&gt;" in form("http://sho.rt/<b>").decode()


def test_a_cookie_opens_its_link_with_its_password_alone() -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    held = keys(**{today: b"k" * 32})
    value = held.issue("vault", HASH)
    assert value is not None
    assert value.startswith(f"{today}.")
    header = f"theme=dark; {COOKIE}={value}".encode()
    assert held.admits(header, "vault", HASH)
    assert not held.admits(header, "other", HASH)
    assert not held.admits(header, "vault", HASH + "x")  # the password changed
    assert not keys(**{today: b"j" * 32}).admits(header, "vault", HASH)
    assert not keys().admits(header, "vault", HASH)  # its day's key is gone
    day, expires, mac = value.split(".")
    later = f"{COOKIE}={day}.{int(expires) + 86400}.{mac}".encode()
    assert not held.admits(later, "vault", HASH)
    assert keys().issue("vault", HASH) is None


def test_the_cookie_is_for_the_links_path_and_not_for_scripts() -> None:
    name, value = set_cookie("d.1.m", "vault", secure=True)
    assert name == b"set-cookie"
    assert value == (
        f"{COOKIE}=d.1.m; Max-Age=86400; Path=/vault; HttpOnly; SameSite=Lax; Secure".encode()
    )
