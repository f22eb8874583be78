from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from shared.cli.generate import json_schema, render_all
from shared.contracts import Click, LinkUpdated, encode


def test_generated_files_match_the_code() -> None:
    """Fails when shared/contracts.py changed without `linkflow schemas`."""
    for path, text in render_all().items():
        assert path.exists(), f"{path} is missing: run `linkflow schemas`"
        assert path.read_text() == text, f"{path} drifted: run `linkflow schemas`"


# The same docstring as each Python keeps it: 3.12 with the source's
# indentation, 3.13 without. Written as strings, not docstrings: the
# formatter re-indents a docstring, and 3.13 would strip it anyway, so two
# docstrings in this file could never differ.
INDENTED = "First line.\n\n        Second paragraph,\n        indented."
FLUSH = "First line.\n\nSecond paragraph,\nindented."
WORDS = "First line. Second paragraph, indented."


class Indented(msgspec.Struct):
    pass


class Flush(msgspec.Struct):
    pass


class Holder(msgspec.Struct):
    """Reaches both, so both are described again in its $defs."""

    indented: Indented
    flush: Flush


Indented.__doc__ = INDENTED
Flush.__doc__ = FLUSH


def test_a_description_does_not_depend_on_how_the_docstring_is_indented() -> None:
    """msgspec 0.23 and Python 3.13 keep a docstring's indentation differently."""
    assert Indented.__doc__ != Flush.__doc__  # the premise: two spellings
    assert json_schema(Indented)["description"] == WORDS
    assert json_schema(Flush)["description"] == WORDS
    defs = json_schema(Holder)["$defs"]
    assert defs["Indented"]["description"] == WORDS
    assert defs["Flush"]["description"] == WORDS


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    c = Click(id="1", code="abc", ts=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert msgspec.json.decode(encode(c))["ts"] == "2026-01-02T03:04:05.678Z"
    whole = Click(id="1", code="abc", ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert msgspec.json.decode(encode(whole))["ts"] == "2026-01-02T03:04:05.000Z"


def test_readers_ignore_unknown_fields() -> None:
    raw = b'{"id":"1","code":"abc","ts":"2026-01-02T03:04:05.000Z","new_field":1,"is_bot":true}'
    assert msgspec.json.decode(raw, type=Click).is_bot


@pytest.mark.parametrize(
    "raw",
    [
        b'{"code":"abc","version":0,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
        b'"updated_at":"2026-01-02T03:04:05.000Z"}',
        b'{"code":"a","version":1,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
        b'"updated_at":"2026-01-02T03:04:05.000Z"}',
        b'{"code":"abc","version":1,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
        b'"updated_at":"2026-01-02T03:04:05"}',
    ],
)
def test_invalid_events_fail_validation(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=LinkUpdated)


def test_gateway_click_matches_the_contract() -> None:
    """The gateway encodes clicks with its own Struct (ts preformatted); it
    must carry exactly the contract's fields and decode as a Click."""
    from services.link.clicks import OutgoingClick, new_click

    assert OutgoingClick.__struct_fields__ == Click.__struct_fields__
    out = new_click(
        "abc",
        referrer="r" * 5000,
        user_agent="Mozilla/5.0",
        ip="203.0.113.7",
        country="DE",
        head=False,
        request_id=None,
        anonymize_ip=True,
    )
    decoded = msgspec.json.decode(msgspec.json.encode(out), type=Click)
    assert decoded.id == out.id
    assert decoded.ip == "203.0.113.0"
    assert decoded.referrer is not None
    assert len(decoded.referrer) == 1024


def test_times_keep_four_year_digits_and_decode_again() -> None:
    """A link may expire in year 166 (any RFC 3339 date-time is accepted):
    its KV entry must still decode, or every gateway ignores the link."""
    from datetime import UTC, datetime

    import msgspec

    from shared.contracts import LinkEntry, encode, rfc3339

    early = datetime(166, 6, 11, 4, 26, 26, 5000, tzinfo=UTC)
    assert rfc3339(early) == "0166-06-11T04:26:26.005Z"
    entry = LinkEntry(url="https://example.com", expires_at=early)
    assert msgspec.json.decode(encode(entry), type=LinkEntry).expires_at == early
