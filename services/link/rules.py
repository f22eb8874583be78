"""Choosing a redirect's target: the link's rules, evaluated in the gateway
from what the request carries and the in-process link map (no I/O), and the
visitor's query string forwarded when the link asks for it."""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qs, quote

import msgspec

from services.link.clicks import anonymize
from shared.contracts import Rule
from shared.geo import Countries
from shared.useragent import Agent, agent

# The facts a memo key digests, unambiguously framed.
_facts = msgspec.msgpack.encode

# What stays as it is in a forwarded query: RFC 3986's query characters and
# existing %XX escapes. Anything else (a space, a quote, a backslash, a byte
# over 0x7f) is percent-encoded, so the Location stays one valid URL.
_QUERY_SAFE: Final = "!$&'()*+,;=:@/?-._~%"
_UNSET: Final = object()
# A "%" that starts no escape ("100%") is a literal percent sign.
_LONE_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


# A rule, compiled once per version of its link: only the conditions it has,
# in the order they are cheapest to test, lists as sets, times as epoch seconds.
_DEVICE, _OS, _LANGUAGE, _COUNTRY, _QUERY, _AFTER, _BEFORE = range(7)
Test = tuple[int, Any]
Compiled = tuple[tuple[tuple[Test, ...], str], ...]


def compile_rules(rules: Sequence[Rule]) -> Compiled:
    out = []
    for rule in rules:
        w = rule.when
        tests: list[Test] = []
        if w.after is not None:
            tests.append((_AFTER, w.after.timestamp()))
        if w.before is not None:
            tests.append((_BEFORE, w.before.timestamp()))
        if w.device is not None:
            tests.append((_DEVICE, frozenset(w.device)))
        if w.os is not None:
            tests.append((_OS, frozenset(w.os)))
        if w.language is not None:
            tests.append((_LANGUAGE, frozenset(w.language)))
        if w.query is not None:
            tests.append((_QUERY, tuple(w.query.items())))
        if w.country is not None:
            tests.append((_COUNTRY, frozenset(w.country)))
        out.append((tuple(tests), rule.url))
    return tuple(out)


def choose(
    rules: Compiled,
    *,
    user_agent: str | None,
    accept_language: str | None,
    country: str | None,
    ip: str | None,
    query: bytes,
    countries: Countries,
) -> int | None:
    """The index of the first rule whose every condition holds, or None.
    Each fact about the visit is worked out when a rule first asks for it,
    at most once (a visit that no rule asks about costs nothing)."""
    found: Agent | None = None
    language: object = _UNSET
    where: object = _UNSET
    params: dict[str, list[str]] | None = None
    now = 0.0
    for i, (tests, _) in enumerate(rules):
        for kind, want in tests:
            if kind == _AFTER:
                now = now or time.time()
                if now < want:
                    break
            elif kind == _BEFORE:
                now = now or time.time()
                if now >= want:
                    break
            elif kind == _DEVICE:
                found = found or agent(user_agent)
                if found.device not in want:
                    break
            elif kind == _OS:
                found = found or agent(user_agent)
                if found.os not in want:
                    break
            elif kind == _LANGUAGE:
                if language is _UNSET:
                    language = preferred_language(accept_language)
                if language not in want:
                    break
            elif kind == _COUNTRY:
                if where is _UNSET:
                    where = visitor_country(country, ip, countries)
                if where not in want:
                    break
            else:  # _QUERY
                if params is None:
                    params = (
                        parse_qs(query.decode("latin-1"), keep_blank_values=True) if query else {}
                    )
                if any(value not in params.get(name, ()) for name, value in want):
                    break
        else:
            return i
    return None


class LinkRules:
    """One version of a link's rules, compiled, with the decisions for the
    visits it has seen: visitors repeat (the same browser, language,
    network and query), so most redirects look their rule up instead of
    testing each. A decision depends only on the facts the rules test, and
    on the time only between two of the rules' ``after``/``before``
    instants: the memo is emptied when the clock passes the next one."""

    # Kinds of visitor remembered per link, each by a 16-byte digest of the
    # facts its rules test (a query may be 16 KiB): with RULED links in a
    # gateway, 64 K small entries at worst.
    MEMO: Final = 64

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.compiled = compile_rules(rules)
        kinds = {kind for tests, _ in self.compiled for kind, _ in tests}
        self._by_agent = bool(kinds & {_DEVICE, _OS})
        self._by_language = _LANGUAGE in kinds
        self._by_country = _COUNTRY in kinds
        self._by_query = _QUERY in kinds
        self._instants = sorted(
            {
                want
                for tests, _ in self.compiled
                for kind, want in tests
                if kind in (_AFTER, _BEFORE)
            }
        )
        self._memo: dict[bytes, int | None] = {}
        self._until = 0.0

    def url(self, index: int) -> str:
        return self.compiled[index][1]

    def choose(
        self,
        user_agent: str | None,
        accept_language: str | None,
        country: str | None,
        ip: str | None,
        query: bytes,
        countries: Countries,
    ) -> int | None:
        now = time.time()
        if now >= self._until:
            self._memo.clear()
            self._until = next((t for t in self._instants if t > now), float("inf"))
        key = hashlib.blake2b(
            _facts(
                (
                    user_agent if self._by_agent else None,
                    accept_language if self._by_language else None,
                    (country or anonymize(ip)) if self._by_country else None,
                    query if self._by_query else None,
                )
            ),
            digest_size=16,
        ).digest()
        found = self._memo.get(key, _UNSET)
        if found is not _UNSET:
            return found  # type: ignore[return-value]
        index = choose(
            self.compiled,
            user_agent=user_agent,
            accept_language=accept_language,
            country=country,
            ip=ip,
            query=query,
            countries=countries,
        )
        if len(self._memo) >= self.MEMO:
            self._memo.clear()
        self._memo[key] = index
        return index


def visitor_country(header: str | None, ip: str | None, countries: Countries) -> str | None:
    """The CDN's header first, else the bundled GeoIP data, asked about the
    anonymized address (the same network, so the same country): the lookup
    cache never holds a visitor's full IP."""
    return header or countries.country(anonymize(ip))


@functools.lru_cache(maxsize=1024)
def preferred_language(header: str | None) -> str | None:
    """The primary tag (lower case) of the highest-quality entry of an
    ``Accept-Language`` header; the first of equals; ``*`` and q=0 never."""
    if not header:
        return None
    best, best_q = None, 0.0
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = tag.split("-", 1)[0].lower(), q
    return best


def forward(target: str, query: bytes) -> str:
    """``target`` with the visitor's query appended after its own parameters
    (SPEC: both kept, the target's first), before any fragment. The visitor's
    part only ever lands after the ``?``: it cannot change the scheme, host
    or path, whatever it holds."""
    if not query:
        return target
    # Byte by byte: a client's raw UTF-8 becomes its %XX escapes, once.
    extra = _LONE_PERCENT.sub("%25", quote(query, safe=_QUERY_SAFE))
    base, hash_, fragment = target.partition("#")
    if "?" in base:
        joined = base + ("" if base.endswith(("?", "&")) else "&") + extra
    else:
        joined = f"{base}?{extra}"
    return joined + hash_ + fragment
