from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest

from services.click_recorder.settings import Settings as RecorderSettings
from services.link.settings import Settings as LinkSettings
from shared import logs
from shared.db import database_name, with_database
from shared.http.access import Access
from shared.settings import (
    Common,
    Rate,
    SettingsError,
    WorkerSettings,
    load,
    parse_duration,
)
from shared.urls import origins, redact


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2.5", 2.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_an_error() -> None:
    with pytest.raises(SettingsError):
        parse_duration("soon")


def one_line(exc: pytest.ExceptionInfo[SettingsError]) -> str:
    said = str(exc.value)
    assert "\n" not in said, said
    return said


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5", 1.5), ("2m", 120.0), ("7d", 604800.0)],
)
def test_a_duration_is_read_by_the_loader(text: str, seconds: float) -> None:
    env = {"LINKFLOW_CLICK_RECORDER_LINGER": text, "LINKFLOW_ACK_WAIT": text}
    s = load(RecorderSettings, "click_recorder", env)
    assert (s.linger, s.worker.ack_wait) == (seconds, seconds)


@pytest.mark.parametrize("text", ["2w", "5 minutes", "1.5.0", "-1s", "s", "", "0.5/s"])
def test_a_duration_with_an_unknown_unit_is_refused(text: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load(RecorderSettings, "click_recorder", {"LINKFLOW_CLICK_RECORDER_LINGER": text})
    assert one_line(exc).startswith(f"LINKFLOW_CLICK_RECORDER_LINGER={text!r} is not a duration (")


@pytest.mark.parametrize(("text", "value"), [("0.7", 0.7), ("0", 0.0), ("1", 1.0), (" .5 ", 0.5)])
def test_a_ratio_is_a_bare_number(text: str, value: float) -> None:
    assert load(LinkSettings, "link", {"LINKFLOW_LINK_BUSY_ABOVE": text}).busy_above == value


@pytest.mark.parametrize("text", ["0.85s", "85%", "1.5", "-0.1", "nan", "inf", "half"])
def test_a_ratio_with_a_unit_or_out_of_bounds_is_refused(text: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load(LinkSettings, "link", {"LINKFLOW_BUSY_ABOVE": text})
    assert one_line(exc) == f"LINKFLOW_BUSY_ABOVE={text!r} is not a number from 0 to 1"


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("100/s", 100.0), ("6000/min", 100.0), ("600/m", 10.0), ("3600/h", 1.0), (" 2.5 / s ", 2.5)],
)
def test_a_rate_is_read_once_into_a_rate(
    text: str, per_second: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    parse = Rate.parse

    def counted(text: str) -> Rate:
        read.append(text)
        return parse(text)

    monkeypatch.setattr(Rate, "parse", counted)
    s = load(LinkSettings, "link", {"LINKFLOW_LINK_WRITE_RATE": text})
    assert s.write_rate == Rate(per_second)
    # The guard takes the number: nothing reads the text again.
    access = Access.build(lambda _m, _p: None, s.common, s.write_rate)
    assert access.writes.rate == per_second
    assert access.failures.rate == s.common.auth_failure_rate.per_second == 10.0
    assert read == [text]


@pytest.mark.parametrize("text", ["fast", "100", "100/week", "100/", "/s", "0/s", "-5/s", "1s"])
def test_a_malformed_rate_is_refused(text: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load(Common, "link", {"LINKFLOW_LINK_AUTH_FAILURE_RATE": text})
    assert one_line(exc).startswith(f"LINKFLOW_LINK_AUTH_FAILURE_RATE={text!r} is not a rate (")


def test_a_plain_number_is_no_duration() -> None:
    assert (
        load(WorkerSettings, "analytics", {"LINKFLOW_RETRY_DELAY_FACTOR": "1.5"}).retry_delay_factor
        == 1.5
    )
    with pytest.raises(SettingsError) as exc:
        load(WorkerSettings, "analytics", {"LINKFLOW_RETRY_DELAY_FACTOR": "2s"})
    assert one_line(exc) == "LINKFLOW_RETRY_DELAY_FACTOR='2s' is not a number"


def test_a_whole_number_names_its_variable() -> None:
    with pytest.raises(SettingsError) as exc:
        load(RecorderSettings, "click_recorder", {"LINKFLOW_CLICK_RECORDER_WORKERS": "many"})
    assert one_line(exc) == "LINKFLOW_CLICK_RECORDER_WORKERS='many' is not a whole number"


def test_every_float_setting_says_how_it_is_read() -> None:
    """A float setting is a Duration, a ratio or, on purpose, a bare number:
    none is read as a duration just for being a float."""
    import importlib
    import typing

    bare = {("WorkerSettings", "retry_delay_factor")}
    found = set()
    classes: list[type[msgspec.Struct]] = [Common, WorkerSettings]
    for package in ("link", "analytics", "click_recorder", "cache_refresher"):
        classes.append(importlib.import_module(f"services.{package}.settings").Settings)
    for cls in classes:
        for name, hint in typing.get_type_hints(cls).items():
            if hint is float and typing.get_type_hints(cls, include_extras=True)[name] is float:
                found.add((cls.__name__, name))
    assert found == bare


def test_service_prefix_wins_over_shared() -> None:
    env = {
        "LINKFLOW_MAX_ATTEMPTS": "9",
        "LINKFLOW_CLICK_RECORDER_MAX_ATTEMPTS": "7",
        "LINKFLOW_CLICK_RECORDER_MAX_TTL": "1h",
        "LINKFLOW_NATS_URL": "nats://x:1",
        "LINKFLOW_CLICK_RECORDER_PORT": "9999",
    }
    s = load(RecorderSettings, "click_recorder", env)
    assert s.worker.max_attempts == 7
    assert s.worker.max_ttl == 3600.0
    assert s.common.nats_url == "nats://x:1"
    assert s.port == 9999


def test_defaults_are_the_specs() -> None:
    w = load(WorkerSettings, "analytics", {})
    assert (w.workers, w.bulk_limit, w.max_attempts, w.max_ttl) == (1, 500, 5, 86400.0)
    assert (w.min_retry_delay, w.max_retry_delay, w.retry_delay_factor) == (1.0, 60.0, 2.0)


def test_invalid_value_is_an_error() -> None:
    with pytest.raises(SettingsError):
        load(RecorderSettings, "click_recorder", {"LINKFLOW_CLICK_RECORDER_WORKERS": "many"})


def test_retry_delay_grows_and_is_capped() -> None:
    w = WorkerSettings(min_retry_delay=1, max_retry_delay=5, retry_delay_factor=2)
    assert [w.retry_delay(a) for a in range(1, 6)] == [1, 2, 4, 5, 5]


def test_factor_below_one_counts_as_one() -> None:
    w = WorkerSettings(min_retry_delay=2, retry_delay_factor=0.5)
    assert [w.retry_delay(a) for a in range(1, 4)] == [2, 2, 2]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("postgresql://postgres@127.0.0.1:5432/linkflow", "linkflow"),
        ("postgresql://postgres:@/linkflow?host=/some/dir", "linkflow"),
        ("postgresql://u@/my%20db?host=%2Frun%2Fpostgresql", "my db"),
        ("postgres://u@h1:5432,h2:5433/linkflow?sslmode=require", "linkflow"),
        ("postgresql://u@h/ignored?dbname=named", "named"),
        ("postgresql://u@h", None),
        ("postgresql:///linkflow", "linkflow"),
    ],
)
def test_database_urls_are_parsed_not_sliced(url: str, name: str | None) -> None:
    assert database_name(url) == name
    other = with_database(url, "postgres")
    assert database_name(other) == "postgres"
    # Everything but the database stays: host(s), socket directory, options.
    assert urlsplit(other).netloc == urlsplit(url).netloc
    kept = [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "dbname"]
    assert parse_qsl(urlsplit(other).query) == kept


def test_a_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        database_name("mysql://root@localhost/linkflow")


def test_a_boolean_that_is_not_one_is_an_error() -> None:
    assert not load(Common, environ={"LINKFLOW_AUTH": "off"}).auth
    assert load(Common, environ={"LINKFLOW_AUTH": " On "}).auth
    with pytest.raises(SettingsError, match=r"LINKFLOW_AUTH='ture' is not a boolean"):
        load(Common, environ={"LINKFLOW_AUTH": "ture"})


def test_auth_off_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    logs.configure("link", Common(auth=False))
    assert "LINKFLOW_AUTH=off" in caplog.text
    caplog.clear()
    logs.configure("link", Common())
    assert "LINKFLOW_AUTH" not in caplog.text


@pytest.mark.parametrize(
    ("service", "env", "says"),
    [
        ("click_recorder", {"LINKFLOW_AUTH": "ture"}, "LINKFLOW_AUTH='ture' is not a boolean"),
        (
            "link",
            {"LINKFLOW_LINK_WRITE_RATE": "fast"},
            "LINKFLOW_LINK_WRITE_RATE='fast' is not a rate",
        ),
        (
            "analytics",
            {"LINKFLOW_AUTH_FAILURE_RATE": "0/s"},
            "LINKFLOW_AUTH_FAILURE_RATE='0/s' is not",
        ),
        (
            "link",
            {"LINKFLOW_LINK_BUSY_ABOVE": "0.85s"},
            "LINKFLOW_LINK_BUSY_ABOVE='0.85s' is not a number from 0 to 1",
        ),
    ],
)
def test_a_bad_setting_stops_a_service_with_one_line(
    service: str, env: dict[str, str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"linkflow {service}: ")
    assert says in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://link:s3cret@h:4222", "nats://link:***@h:4222"),
        ("nats://t0ken@h:4222", "nats://***@h:4222"),
        ("nats://a:x@h1:1,nats://a:y@h2:2", "nats://a:***@h1:1,nats://a:***@h2:2"),
        ("nats://h:4222", "nats://h:4222"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://postgres@h/db", "postgresql://postgres@h/db"),
    ],
)
def test_secrets_in_urls_are_not_shown(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_web_apps_origins() -> None:
    assert origins("https://app.sho.rt/") == ["https://app.sho.rt"]
    assert origins("http://user:pw@app.example:8443/app/") == ["http://app.example:8443"]
    # linkflow up: either spelling of this machine works.
    assert origins("http://127.0.0.1:8081") == ["http://127.0.0.1:8081", "http://localhost:8081"]
    assert origins("http://localhost:8081") == ["http://127.0.0.1:8081", "http://localhost:8081"]
    # compose: a replica per host port.
    assert origins("http://localhost:8081,http://localhost:8082") == [
        "http://127.0.0.1:8081",
        "http://localhost:8081",
        "http://127.0.0.1:8082",
        "http://localhost:8082",
    ]
    # As browsers send it: lower case, no default port.
    assert origins("HTTPS://App.Sho.rt:443/app/") == ["https://app.sho.rt"]
    assert origins("http://[::1]:8081") == ["http://[::1]:8081"]
