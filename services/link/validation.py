"""The rules for a link's fields, checked on the JSON a caller sent: every
violation is a FieldError named by its path (``rules[2].when.os``), all of
them reported at once; what passes becomes a ``NewLink`` or ``LinkChanges``."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import socket
import string
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

from services.link.domains import Domains
from services.link.payloads import (
    MAX_PASSWORD,
    MAX_TAG,
    MAX_TAGS,
    MAX_URL,
    MAX_VISITS,
    MIN_PASSWORD,
    LinkChanges,
    NewLink,
)
from shared.contracts import (
    DEVICES,
    MAX_DESTINATIONS,
    MAX_RULES,
    MAX_WEIGHT,
    MIN_DESTINATIONS,
    OSES,
    Destination,
    Preview,
    Rule,
    When,
    millis,
)
from shared.http.problems import FieldError, Problem
from shared.urls import default_host, host_name

CODE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
RESERVED: Final = frozenset({"api", "healthz", "readyz", "metrics", "console"})
REDIRECT_TYPES: Final = frozenset({301, 302, 307, 308})
_ALPHABET: Final = string.ascii_letters + string.digits
UPDATABLE: Final = frozenset(
    {
        "url",
        "redirect_type",
        "expires_at",
        "tags",
        "max_visits",
        "forward_query",
        "rules",
        "destinations",
        "preview",
        "password",
    }
)
_PREVIEW_FIELDS: Final = frozenset({"title", "description", "image"})
MAX_TITLE: Final = 200
MAX_DESCRIPTION: Final = 500
_LANGUAGE: Final = re.compile(r"^[a-z]{2,3}$")
_COUNTRY: Final = re.compile(r"^[A-Z]{2}$")
_WHEN: Final = ("device", "os", "language", "country", "query", "after", "before")
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]+")


def _password(value: Any) -> str | None:
    """Never echoed in an error: a caller's password is not logged."""
    if value is None:
        return None
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise ValueError(f"must be text of {MIN_PASSWORD} to {MAX_PASSWORD} characters or null")
    return value


def generate_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(7))


class LinkFields:
    """Checks a JSON object's link fields, collecting every error at once."""

    def __init__(self, public_url: str, domains: Domains | None = None) -> None:
        self._own_hosts = {_host_port(public_url)}
        self._default_host = default_host(public_url)
        self._domains = domains

    def create(self, body: Any) -> NewLink:
        """A ``POST /api/links`` body (or a CSV row as one), checked."""
        return NewLink(**self._check(body, creating=True))

    def change(self, body: Any) -> LinkChanges:
        """A ``PATCH /api/links/{code}`` body, checked."""
        return LinkChanges(**self._check(body, creating=False))

    def _check(self, body: Any, *, creating: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Problem.invalid([FieldError("body", "must be a JSON object")])
        errors: list[FieldError] = []
        allowed = UPDATABLE | ({"code", "domain"} if creating else set())
        for name in body:
            if name not in allowed:
                errors.append(FieldError(name, "unknown or read-only field"))
        out: dict[str, Any] = {}
        if creating and "url" not in body:
            errors.append(FieldError("url", "is required"))
        checks = {
            "url": self.target,
            "code": _code,
            "domain": self._domain,
            "redirect_type": _redirect_type,
            "expires_at": _expires_at,
            "tags": _tags,
            "max_visits": _max_visits,
            "forward_query": _forward_query,
            "password": _password,
        }
        for name, check in checks.items():
            if name in body and name in allowed:
                try:
                    out[name] = check(body[name])
                except ValueError as exc:
                    errors.append(FieldError(name, str(exc)))
        if "rules" in body:
            out["rules"] = self._rules(body["rules"], errors)
        if "destinations" in body:
            out["destinations"] = self._destinations(body["destinations"], errors)
        if "preview" in body:
            out["preview"] = self._preview(body["preview"], errors)
        if errors:
            raise Problem.invalid(errors)
        return out

    def _domain(self, value: Any) -> str | None:
        """A new link's domain: None for the default one (named or not)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a domain's host or null")
        host = host_name(value)
        if host == self._default_host:
            return None
        if self._domains is None or self._domains.get(host) is None:
            raise ValueError(f"{host} is not a domain of this linkflow (POST /api/domains adds it)")
        return host

    def _preview(self, value: Any, errors: list[FieldError]) -> Preview | None:
        """A social preview: null, or any of title (at most 200 characters),
        description (500) and image (an http or https URL)."""
        if value is None:
            return None
        if not isinstance(value, dict) or not value or set(value) - _PREVIEW_FIELDS:
            errors.append(
                FieldError("preview", "must be null or an object of title, description, image")
            )
            return None
        out: dict[str, str] = {}
        for name, most in (("title", MAX_TITLE), ("description", MAX_DESCRIPTION)):
            text = value.get(name)
            if text is None:
                continue
            if not isinstance(text, str) or not text.strip() or len(text) > most:
                errors.append(
                    FieldError(f"preview.{name}", f"must be text of 1 to {most} characters")
                )
            else:
                out[name] = text
        if value.get("image") is not None:
            try:
                out["image"] = self.target(value["image"])
            except ValueError as exc:
                errors.append(FieldError("preview.image", str(exc)))
        return Preview(**out)

    def _destinations(self, value: Any, errors: list[FieldError]) -> list[Destination] | None:
        """An A/B split: null, or 2 to 10 ``{url, weight}``, each problem
        named by its path (``destinations[1].weight``)."""
        if value is None:
            return None
        if not isinstance(value, list) or not (MIN_DESTINATIONS <= len(value) <= MAX_DESTINATIONS):
            errors.append(
                FieldError(
                    "destinations",
                    f"must be null or a list of {MIN_DESTINATIONS} to {MAX_DESTINATIONS} "
                    "{url, weight} objects",
                )
            )
            return None
        out: list[Destination] = []
        for i, raw in enumerate(value):
            at = f"destinations[{i}]"
            if not isinstance(raw, dict) or set(raw) - {"url", "weight"}:
                errors.append(FieldError(at, "must be an object with url and weight alone"))
                continue
            try:
                url = self.target(raw.get("url"))
            except ValueError as exc:
                errors.append(FieldError(f"{at}.url", str(exc)))
                continue
            weight = raw.get("weight")
            if type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
                errors.append(
                    FieldError(f"{at}.weight", f"must be an integer from 1 to {MAX_WEIGHT}")
                )
                continue
            out.append(Destination(url=url, weight=weight))
        return out

    def _rules(self, value: Any, errors: list[FieldError]) -> list[Rule]:
        """Each bad rule, condition or value named by its path, e.g.
        ``rules[2].when.os``; every problem reported at once."""
        if not isinstance(value, list):
            errors.append(FieldError("rules", "must be a list of {when, url} objects"))
            return []
        if len(value) > MAX_RULES:
            errors.append(FieldError("rules", f"at most {MAX_RULES} rules"))
            return []
        rules: list[Rule] = []
        for i, raw in enumerate(value):
            at = f"rules[{i}]"
            if not isinstance(raw, dict):
                errors.append(FieldError(at, "must be an object {when, url}"))
                continue
            for key in raw.keys() - {"when", "url"}:
                errors.append(FieldError(f"{at}.{key}", "unknown field (a rule has when and url)"))
            url = None
            try:
                url = self.target(raw.get("url"))
            except ValueError as exc:
                errors.append(FieldError(f"{at}.url", str(exc)))
            when = _when(raw.get("when"), f"{at}.when", errors)
            if url is not None and when is not None:
                rules.append(Rule(when=when, url=url))
        return rules

    def target(self, value: Any) -> str:
        """A target URL (a link's, a rule's, a domain's redirect), checked and
        normalised."""
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        if len(value) > MAX_URL:
            raise ValueError(f"must be at most {MAX_URL} characters")
        if any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("must not contain whitespace or control characters")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme.lower() not in {"http", "https"}:
            raise ValueError("must be an absolute http or https URL")
        if not parts.hostname:
            raise ValueError("must have a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials")
        host = parts.hostname
        if "%" in host:
            # Browsers decode a percent-escaped host (WHATWG URL): it would
            # reach a host this check never saw.
            raise ValueError("has a host that is not a valid domain name")
        if not parts.netloc.isascii():
            # Location headers are ASCII. A host becomes its IDNA (punycode)
            # form, which every client resolves; percent-encoding it would
            # only work in browsers.
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError("has a host that is not a valid domain name") from None
            netloc = host if port is None else f"{host}:{port}"
            scheme, _, rest = value.partition("//")
            value = f"{scheme}//{netloc}{rest[len(parts.netloc) :]}"
        same = _same_host(host)
        if (same, port or _default_port(parts.scheme)) in self._own_hosts or (
            self._domains is not None and self._domains.get(same) is not None
        ):
            raise ValueError("must not point at this gateway (redirect loop)")
        # The path, query and fragment: percent-encoded, once, here.
        return _NON_ASCII.sub(lambda m: quote(m.group()), value)


def _default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return _same_host(parts.hostname or ""), parts.port or _default_port(parts.scheme)


def _same_host(host: str) -> str:
    """One spelling per host, as a browser reads it: lower case, without the
    root's trailing dot (``sho.rt.`` is ``sho.rt``), in IDNA form; an IPv4
    address in any of its numeric forms (``127.1``, ``0x7f.0.0.1``,
    ``2130706433``, ``::ffff:127.0.0.1``) as its dotted quad, an IPv6 one
    compressed."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(address)
    if host and host.rsplit(".", 1)[-1][:1].isdigit():
        # A last label that starts with a digit makes the host an IPv4
        # address to a browser (WHATWG URL), in the forms inet_aton reads.
        with contextlib.suppress(OSError):
            return socket.inet_ntoa(socket.inet_aton(host))
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return host
    return host


def _code(value: Any) -> str:
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise ValueError("must match [A-Za-z0-9_-]{3,64}")
    if value.lower() in RESERVED:
        raise ValueError(f"{value!r} is reserved")
    return value


def _redirect_type(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in REDIRECT_TYPES:
        raise ValueError("must be one of 301, 302, 307, 308")
    return value


def _expires_at(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time or null")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time or null") from None
    if parsed.tzinfo is None:
        raise ValueError("must include a time zone offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError("is out of range") from None


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("must be a list of strings")
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return list(dict.fromkeys(tag_value(t) for t in value))


def tag_value(tag: str) -> str:
    if not tag or len(tag) > MAX_TAG:
        raise ValueError(f"each tag must be 1 to {MAX_TAG} characters")
    if "\x00" in tag:
        raise ValueError("a tag must not contain a NUL character")
    return tag


def _max_visits(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be null or an integer of at least 1")
    if value > MAX_VISITS:
        raise ValueError(f"must be at most {MAX_VISITS}")
    return value


def _forward_query(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _choices(value: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a non-empty list of: {', '.join(allowed)}")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown value {unknown[0]!r} (use {', '.join(allowed)})")
    return list(dict.fromkeys(value))


def _patterned(value: Any, pattern: re.Pattern[str], what: str, fold: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a non-empty list of {what}")
    folded = [v.upper() if fold == "upper" else v.lower() for v in value]
    bad = [v for v, f in zip(value, folded, strict=True) if not pattern.match(f)]
    if bad:
        raise ValueError(f"unknown value {bad[0]!r} (use {what})")
    return list(dict.fromkeys(folded))


def _query(value: Any) -> dict[str, str]:
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items())
    ):
        raise ValueError("must be a non-empty object of parameter: value strings")
    if any("\x00" in k or "\x00" in v for k, v in value.items()):
        raise ValueError("must not contain a NUL character")
    return dict(value)


def _when(value: Any, at: str, errors: list[FieldError]) -> When | None:
    if not isinstance(value, dict) or not value:
        errors.append(FieldError(at, f"must be an object with at least one of: {', '.join(_WHEN)}"))
        return None
    found: dict[str, Any] = {}
    failed = False
    for name, raw in value.items():
        try:
            if name == "device":
                found[name] = _choices(raw, DEVICES)
            elif name == "os":
                found[name] = _choices(raw, OSES)
            elif name == "language":
                found[name] = _patterned(
                    raw, _LANGUAGE, "primary language tags such as de", "lower"
                )
            elif name == "country":
                found[name] = _patterned(
                    raw, _COUNTRY, "ISO 3166-1 alpha-2 codes such as DE", "upper"
                )
            elif name == "query":
                found[name] = _query(raw)
            elif name in ("after", "before"):
                when = _expires_at(raw)
                if when is None:
                    raise ValueError("must be an RFC 3339 date-time")
                # As every time on the wire: to the millisecond.
                found[name] = millis(when)
            else:
                raise ValueError(f"unknown condition (use {', '.join(_WHEN)})")
        except ValueError as exc:
            errors.append(FieldError(f"{at}.{name}", str(exc)))
            failed = True
    if "after" in found and "before" in found and found["after"] >= found["before"]:
        errors.append(FieldError(f"{at}.before", "must be later than after"))
        failed = True
    return None if failed else When(**found)
