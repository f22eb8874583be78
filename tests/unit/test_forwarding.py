"""Forwarding the visitor's query string (``forward_query``), without a
server: appended after the target's own parameters and before its fragment,
escaped so that the Location stays one valid URL, and never able to move the
visitor to another scheme, host or path. (tests/integration/test_rules.py
follows a few of these through the gateway, as raw request lines.)"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from services.link.rules import forward


@pytest.mark.parametrize(
    ("target", "query", "location"),
    [
        ("https://e.example/p", b"a=1&b=2", "https://e.example/p?a=1&b=2"),
        ("https://e.example/p?own=1", b"a=1", "https://e.example/p?own=1&a=1"),
        ("https://e.example/p?own=1#top", b"a=1", "https://e.example/p?own=1&a=1#top"),
        ("https://e.example/p#top", b"a=1", "https://e.example/p?a=1#top"),
        ("https://e.example/p?", b"a=1", "https://e.example/p?a=1"),
        ("https://e.example/p?own=1&", b"a=1", "https://e.example/p?own=1&a=1"),
        ("https://e.example", b"x=1", "https://e.example?x=1"),
        # Nothing to forward: the target as it is.
        ("https://e.example/p", b"", "https://e.example/p"),
        ("https://e.example/p#top", b"", "https://e.example/p#top"),
        # Escapes stay as they came, once.
        ("https://e.example/p", b"q=caf%C3%A9&x=%2F", "https://e.example/p?q=caf%C3%A9&x=%2F"),
        # A client's raw UTF-8 becomes its escapes.
        ("https://e.example/p", "q=café".encode(), "https://e.example/p?q=caf%C3%A9"),
        # A "%" that starts no escape is a literal percent sign.
        ("https://e.example/p", b"q=100%", "https://e.example/p?q=100%25"),
        ("https://e.example/p", b"q=%zz%4", "https://e.example/p?q=%25zz%254"),
        # RFC 3986's query characters pass as they are.
        ("https://e.example/p", b"a=/?:@!$'()*+,;", "https://e.example/p?a=/?:@!$'()*+,;"),
        # A fragment in the visitor's part stays in the query.
        ("https://e.example/p#top", b"a=1#x", "https://e.example/p?a=1%23x#top"),
    ],
)
def test_the_visitors_query_follows_the_targets_own(
    target: str, query: bytes, location: str
) -> None:
    assert forward(target, query) == location


@pytest.mark.parametrize(
    "query",
    [
        b"@evil.example",
        b"//evil.example/",
        b"x=1&https://evil.example",
        b"a=%0d%0aLocation:%20https://evil.example",
        b"a=\r\nLocation: https://evil.example",
        b"a=\\\\evil.example",
        b'a="<script>"',
        b"a= b\tc",
        b"\x00\x7f\xff",
    ],
)
def test_a_forwarded_query_cannot_change_the_host(query: bytes) -> None:
    location = forward("https://e.example/p", query)
    parts = urlsplit(location)
    assert (parts.scheme, parts.hostname, parts.path) == ("https", "e.example", "/p")
    # One printable ASCII URL: no space, no control character, no line break.
    assert all(33 <= ord(c) < 127 for c in location), location
    assert parts.query  # the visitor's part landed after the ?


def test_the_target_reads_the_parameters_the_visitor_sent() -> None:
    location = forward("https://e.example/p?own=1", "q=a b&name=zoë&x=%2F".encode())
    assert parse_qsl(urlsplit(location).query) == [
        ("own", "1"),
        ("q", "a b"),
        ("name", "zoë"),
        ("x", "/"),
    ]
