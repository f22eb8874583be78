from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import parse_qsl, urlsplit

import pytest

from services.click_recorder.settings import Settings as RecorderSettings
from shared import logs
from shared.db import database_name, with_database
from shared.settings import Common, SettingsError, WorkerSettings, load, parse_duration
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
        ("link", {"LINKFLOW_LINK_WRITE_RATE": "fast"}, "not a rate: 'fast'"),
        ("analytics", {"LINKFLOW_AUTH_FAILURE_RATE": "0/s"}, "not a rate: '0/s'"),
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
