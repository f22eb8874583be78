"""Log lines are JSON with the service, level, message and request id (SPEC, Deployment)."""

from __future__ import annotations

import json
import logging

import pytest

from shared.logs import JsonLines
from shared.settings import Common, SettingsError, load


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("shared.jetstream.worker", logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_line_is_one_json_object_with_the_request_id() -> None:
    line = JsonLines("click-recorder").format(record('nak "seq" 4\nagain', request_id="r-1"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["service"] == "click-recorder"
    assert parsed["level"] == "warning"
    assert parsed["logger"] == "shared.jetstream.worker"
    assert parsed["msg"] == 'nak "seq" 4\nagain'
    assert parsed["request_id"] == "r-1"
    assert parsed["ts"].endswith("+00:00")


def test_a_line_about_no_request_has_no_request_id() -> None:
    assert "request_id" not in json.loads(JsonLines("link").format(record("started")))


def test_an_unknown_log_format_is_refused_at_start() -> None:
    assert load(Common, environ={"LINKFLOW_LOG_FORMAT": "text"}).log_format == "text"
    with pytest.raises(SettingsError, match="log_format"):
        load(Common, environ={"LINKFLOW_LOG_FORMAT": "xml"})
