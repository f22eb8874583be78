"""A link's fields as ``LinkFields`` checks them, without a server: every
error named by its path, all of them at once; what passes, normalised.
(tests/integration/test_api.py and test_rules.py send some of these through
the gateway, for the 422 problem+json around them; the redirect-loop
spellings are in test_link_fields.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.link.payloads import MAX_VISITS
from services.link.validation import LinkFields
from shared.contracts import Rule, When
from shared.http.problems import FieldError, Problem

FIELDS = LinkFields("http://sho.rt")
OK = "https://e.example/"


def errors(body: Any, *, creating: bool = True) -> list[FieldError]:
    """The errors of a refused body (fails if it passes)."""
    with pytest.raises(Problem) as refused:
        FIELDS.create(body) if creating else FIELDS.change(body)
    assert refused.value.status == 422
    return refused.value.errors


def fields(body: Any, *, creating: bool = True) -> list[str]:
    return [e.field for e in errors(body, creating=creating)]


def message(body: Any, *, creating: bool = True) -> str:
    (only,) = errors(body, creating=creating)
    return only.message


# --- the whole body ---------------------------------------------------------


@pytest.mark.parametrize("body", [["https://example.com"], "https://example.com", None, 1])
def test_a_body_is_a_json_object(body: Any) -> None:
    assert errors(body) == [FieldError("body", "must be a JSON object")]


def test_every_error_is_reported_at_once() -> None:
    body = {
        "url": "ftp://e.example/",
        "code": "ab",
        "redirect_type": 303,
        "tags": "a,b",
        "version": 7,
        "rules": [{"when": {"os": ["beos"]}, "url": OK}],
    }
    assert sorted(fields(body)) == [
        "code",
        "redirect_type",
        "rules[0].when.os",
        "tags",
        "url",
        "version",
    ]


def test_a_new_link_needs_a_url_a_change_does_not() -> None:
    assert errors({}) == [FieldError("url", "is required")]
    assert FIELDS.change({"tags": ["a"]}).given() == {"tags": ["a"]}


def test_a_change_cannot_set_the_code() -> None:
    assert errors({"code": "abc"}, creating=False) == [
        FieldError("code", "unknown or read-only field")
    ]


@pytest.mark.parametrize("name", ["version", "created_at", "id", "clicks"])
def test_read_only_and_unknown_fields_are_named(name: str) -> None:
    assert errors({"url": OK, name: 1}) == [FieldError(name, "unknown or read-only field")]


def test_what_passes_is_normalised() -> None:
    link = FIELDS.create(
        {
            "url": OK,
            "code": "My_Code-1",
            "redirect_type": 301,
            "expires_at": "2030-01-01T02:00:00+02:00",
            "tags": ["b", "a", "b"],
            "max_visits": 5,
            "forward_query": True,
        }
    )
    assert link.code == "My_Code-1"
    assert link.redirect_type == 301
    assert link.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert link.tags == ["b", "a"]  # duplicates dropped, order kept
    assert (link.max_visits, link.forward_query) == (5, True)


# --- codes ------------------------------------------------------------------


@pytest.mark.parametrize("code", ["abc", "A" * 64, "a-b_c", "123"])
def test_good_codes(code: str) -> None:
    assert FIELDS.create({"url": OK, "code": code}).code == code


@pytest.mark.parametrize("code", ["ab", "a" * 65, "bad/code", "dot.ted", "ümlaut", "", 123, None])
def test_bad_codes(code: Any) -> None:
    assert message({"url": OK, "code": code}) == "must match [A-Za-z0-9_-]{3,64}"


@pytest.mark.parametrize(
    "code", ["api", "healthz", "readyz", "metrics", "console", "API", "Metrics"]
)
def test_reserved_codes_in_any_case(code: str) -> None:
    assert message({"url": OK, "code": code}) == f"{code!r} is reserved"


# --- URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (42, "must be a non-empty string"),
        ("", "must be a non-empty string"),
        ("https://e.example/" + "a" * 2048, "must be at most 2048 characters"),
        ("https://e.example/a b", "must not contain whitespace or control characters"),
        ("https://e.example/\x07", "must not contain whitespace or control characters"),
        ("ftp://e.example/x", "must be an absolute http or https URL"),
        ("javascript:alert(1)", "must be an absolute http or https URL"),
        ("e.example/x", "must be an absolute http or https URL"),
        ("https://", "must have a host"),
        ("https://user:pw@e.example/", "must not contain credentials"),
        ("https://user@e.example/", "must not contain credentials"),
        ("https://:pw@e.example/", "must not contain credentials"),
        ("https://e.example:99999/", "is not a valid URL (Port out of range 0-65535)"),
        ("https://sho%2Ert/", "has a host that is not a valid domain name"),
        (f"https://{'ü' * 64}.example/", "has a host that is not a valid domain name"),
        ("http://sho.rt/loop", "must not point at this gateway (redirect loop)"),
        ("http://SHO.RT:80/loop", "must not point at this gateway (redirect loop)"),
    ],
)
def test_bad_urls(url: Any, why: str) -> None:
    assert errors({"url": url}) == [FieldError("url", why)]


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://e.example/", "https://e.example/"),
        ("HTTP://e.example", "HTTP://e.example"),
        # An international host becomes its IDNA form, its port kept.
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("https://bücher.example:8443/x", "https://xn--bcher-kva.example:8443/x"),
        # The path, query and fragment are percent-encoded, once.
        ("https://e.example/café?q=é#ü", "https://e.example/caf%C3%A9?q=%C3%A9#%C3%BC"),
        ("https://e.example/caf%C3%A9", "https://e.example/caf%C3%A9"),
        # Another port of the gateway's host is another origin.
        ("http://sho.rt:8080/x", "http://sho.rt:8080/x"),
    ],
)
def test_good_urls(url: str, stored: str) -> None:
    assert FIELDS.create({"url": url}).url == stored


# --- the other fields -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("redirect_type", 303, "must be one of 301, 302, 307, 308"),
        ("redirect_type", "302", "must be one of 301, 302, 307, 308"),
        ("redirect_type", True, "must be one of 301, 302, 307, 308"),
        ("expires_at", "tomorrow", "must be an RFC 3339 date-time or null"),
        ("expires_at", 1700000000, "must be an RFC 3339 date-time or null"),
        ("expires_at", "2030-01-01T00:00:00", "must include a time zone offset"),
        ("expires_at", "0001-01-01T00:00:00+14:00", "is out of range"),
        ("tags", "a,b", "must be a list of strings"),
        ("tags", ["a", 1], "must be a list of strings"),
        ("tags", [""], "each tag must be 1 to 64 characters"),
        ("tags", ["x" * 65], "each tag must be 1 to 64 characters"),
        ("tags", ["a\x00"], "a tag must not contain a NUL character"),
        ("tags", [str(i) for i in range(21)], "at most 20 tags"),
        ("max_visits", 0, "must be null or an integer of at least 1"),
        ("max_visits", True, "must be null or an integer of at least 1"),
        ("max_visits", "5", "must be null or an integer of at least 1"),
        ("max_visits", MAX_VISITS + 1, f"must be at most {MAX_VISITS}"),
        ("forward_query", "yes", "must be true or false"),
        ("forward_query", 1, "must be true or false"),
    ],
)
def test_bad_values(name: str, value: Any, why: str) -> None:
    assert errors({"url": OK, name: value}) == [FieldError(name, why)]
    # The same check on a change.
    assert errors({name: value}, creating=False) == [FieldError(name, why)]


def test_null_clears_what_may_be_cleared() -> None:
    changes = FIELDS.change({"expires_at": None, "max_visits": None})
    assert changes.given() == {"expires_at": None, "max_visits": None}


# --- rules ------------------------------------------------------------------


def rule(**when: Any) -> dict[str, Any]:
    return {"when": when, "url": OK}


@pytest.mark.parametrize(
    ("rules", "field", "why"),
    [
        ("nope", "rules", "must be a list of {when, url} objects"),
        ([rule(device=["mobile"])] * 21, "rules", "at most 20 rules"),
        (["x"], "rules[0]", "must be an object {when, url}"),
        ([{"when": {"device": ["mobile"]}}], "rules[0].url", "must be a non-empty string"),
        (
            [{"when": {"device": ["mobile"]}, "url": "ftp://e.example/"}],
            "rules[0].url",
            "must be an absolute http or https URL",
        ),
        (
            [{"when": {"device": ["mobile"]}, "url": "http://sho.rt/loop"}],
            "rules[0].url",
            "must not point at this gateway (redirect loop)",
        ),
        (
            [{"url": OK}],
            "rules[0].when",
            "must be an object with at least one of: "
            "device, os, language, country, query, after, before",
        ),
        (
            [rule()],
            "rules[0].when",
            "must be an object with at least one of: "
            "device, os, language, country, query, after, before",
        ),
        (
            [rule(colour=["red"])],
            "rules[0].when.colour",
            "unknown condition (use device, os, language, country, query, after, before)",
        ),
        (
            [rule(device=["phone"])],
            "rules[0].when.device",
            "unknown value 'phone' (use mobile, tablet, desktop)",
        ),
        (
            [rule(device=[])],
            "rules[0].when.device",
            "must be a non-empty list of: mobile, tablet, desktop",
        ),
        (
            [rule(os="ios")],
            "rules[0].when.os",
            "must be a non-empty list of: ios, android, windows, macos, linux",
        ),
        (
            [rule(language=["deutsch"])],
            "rules[0].when.language",
            "unknown value 'deutsch' (use primary language tags such as de)",
        ),
        (
            [rule(language=["de-CH"])],
            "rules[0].when.language",
            "unknown value 'de-CH' (use primary language tags such as de)",
        ),
        (
            [rule(country=["DEU"])],
            "rules[0].when.country",
            "unknown value 'DEU' (use ISO 3166-1 alpha-2 codes such as DE)",
        ),
        (
            [rule(query={"a": 1})],
            "rules[0].when.query",
            "must be a non-empty object of parameter: value strings",
        ),
        (
            [rule(query={})],
            "rules[0].when.query",
            "must be a non-empty object of parameter: value strings",
        ),
        (
            [rule(query={"": "x"})],
            "rules[0].when.query",
            "must be a non-empty object of parameter: value strings",
        ),
        ([rule(query={"a": "\x00"})], "rules[0].when.query", "must not contain a NUL character"),
        (
            [rule(after="yesterday")],
            "rules[0].when.after",
            "must be an RFC 3339 date-time or null",
        ),
        ([rule(after=None)], "rules[0].when.after", "must be an RFC 3339 date-time"),
        (
            [rule(before="2030-01-01T00:00:00")],
            "rules[0].when.before",
            "must include a time zone offset",
        ),
        (
            [rule(after="2030-01-01T00:00:00Z", before="2029-01-01T00:00:00Z")],
            "rules[0].when.before",
            "must be later than after",
        ),
        (
            [rule(after="2030-01-01T00:00:00Z", before="2030-01-01T00:00:00Z")],
            "rules[0].when.before",
            "must be later than after",
        ),
        (
            [rule(device=["mobile"]), {**rule(os=["ios"]), "extra": 1}],
            "rules[1].extra",
            "unknown field (a rule has when and url)",
        ),
    ],
)
def test_an_invalid_rule_is_named_by_its_path(rules: Any, field: str, why: str) -> None:
    assert errors({"url": OK, "rules": rules}) == [FieldError(field, why)]
    assert errors({"rules": rules}, creating=False) == [FieldError(field, why)]


def test_each_bad_rule_and_condition_is_named() -> None:
    rules = [
        rule(device=["mobile"]),
        rule(os=["beos"], language=["xx-yy"]),
        {"when": {"country": ["de"]}, "url": "https://user@e.example/"},
        "x",
    ]
    assert fields({"url": OK, "rules": rules}) == [
        "rules[1].when.os",
        "rules[1].when.language",
        "rules[2].url",
        "rules[3]",
    ]


def test_good_rules_are_folded_and_kept_in_order() -> None:
    link = FIELDS.create(
        {
            "url": OK,
            "rules": [
                {
                    "when": {
                        "device": ["mobile", "tablet", "mobile"],
                        "language": ["DE", "fr"],
                        "country": ["de", "AT"],
                        "query": {"src": "news"},
                        "after": "2030-01-01T01:00:00.123456+01:00",
                        "before": "2031-01-01T00:00:00Z",
                    },
                    "url": "https://m.example/",
                },
                {"when": {"os": ["ios"]}, "url": "https://ios.example/"},
            ],
        }
    )
    assert link.rules == [
        Rule(
            when=When(
                device=["mobile", "tablet"],
                language=["de", "fr"],
                country=["DE", "AT"],
                query={"src": "news"},
                # In UTC, to the millisecond, as every time on the wire.
                after=datetime(2030, 1, 1, 0, 0, 0, 123000, tzinfo=UTC),
                before=datetime(2031, 1, 1, tzinfo=UTC),
            ),
            url="https://m.example/",
        ),
        Rule(when=When(os=["ios"]), url="https://ios.example/"),
    ]


def test_an_empty_list_clears_the_rules() -> None:
    assert FIELDS.change({"rules": []}).given() == {"rules": []}
