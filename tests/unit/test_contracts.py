from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from shared.contracts import Click, LinkUpdated, encode
from shared.schema import render_all


def test_generated_files_match_the_code() -> None:
    """Fails when shared/contracts.py changed without `linkflow schemas`."""
    for path, text in render_all().items():
        assert path.exists(), f"{path} is missing: run `linkflow schemas`"
        assert path.read_text() == text, f"{path} drifted: run `linkflow schemas`"


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    c = Click(id="1", code="abc", ts=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert msgspec.json.decode(encode(c))["ts"] == "2026-01-02T03:04:05.678Z"
    whole = Click(id="1", code="abc", ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert msgspec.json.decode(encode(whole))["ts"] == "2026-01-02T03:04:05.000Z"


def test_readers_ignore_unknown_fields() -> None:
    raw = (b'{"id":"1","code":"abc","ts":"2026-01-02T03:04:05.000Z","new_field":1,'
           b'"is_bot":true}')
    assert msgspec.json.decode(raw, type=Click).is_bot


@pytest.mark.parametrize("raw", [
    b'{"code":"abc","version":0,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
    b'"updated_at":"2026-01-02T03:04:05.000Z"}',
    b'{"code":"a","version":1,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
    b'"updated_at":"2026-01-02T03:04:05.000Z"}',
    b'{"code":"abc","version":1,"url":"u","redirect_type":302,"expires_at":null,"tags":[],'
    b'"updated_at":"2026-01-02T03:04:05"}',
])
def test_invalid_events_fail_validation(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=LinkUpdated)
