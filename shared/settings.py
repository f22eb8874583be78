"""Typed settings read from ``LINKFLOW_*`` environment variables.

Each service builds its settings once, in its entry point, with :func:`load`.
A field is looked up first as ``LINKFLOW_<SERVICE>_<FIELD>`` and then as
``LINKFLOW_<FIELD>``, so ``LINKFLOW_CLICK_RECORDER_MAX_ATTEMPTS`` overrides a
shared ``LINKFLOW_MAX_ATTEMPTS``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from shared import roster
from shared.backoff import Backoff

T = TypeVar("T", bound=msgspec.Struct)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SettingsError(ValueError):
    """A setting is missing or cannot be read; the service must not start."""


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"1s"``, ``"5m"``, ``"24h"``, ``"7d"`` or a bare number."""
    match = _DURATION.match(text)
    if match is None:
        raise SettingsError(f"not a duration: {text!r} (use e.g. 500ms, 1s, 5m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """Events per second in ``"50/s"``, ``"600/m"`` or ``"1000/h"``."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise SettingsError(f"not a rate: {text!r} (use e.g. 50/s, 600/m)")
    return float(match.group(1)) / _PER[match.group(2)]


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, text: str) -> bool:
    """A typo (``ture``) stops the service instead of silently meaning False."""
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise SettingsError(f"{name}={text!r} is not a boolean (use true/false, on/off, 1/0)")


class Common(msgspec.Struct, kw_only=True, frozen=True):
    # LINKFLOW_<SERVICE>_NATS_URL / _NATS_CREDS give one service its own
    # server and identity (a user:password@ URL, or a JWT + NKey creds file).
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str = ""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/linkflow"
    analytics_database_url: str = "postgresql://postgres@127.0.0.1:5432/linkflow_analytics"
    public_url: str = f"http://127.0.0.1:{roster.LINK.port}"
    # Where people open the web app (analytics serves it at /app/): the
    # gateway allows cross-origin API calls from this origin and no other
    # (several, comma-separated: compose's analytics replicas).
    app_url: str = f"http://127.0.0.1:{roster.ANALYTICS.port}"
    log_level: str = "INFO"
    # JSON lines (SPEC) or "text" for reading in a terminal.
    log_format: str = "json"
    # CLICKS keeps clicks this long so they can be replayed (SPEC: default 7 days).
    clicks_max_age: float = 7 * 86400.0
    # Copies of every stream and KV bucket that `linkflow migrate` keeps: 3 on
    # a three-node cluster (compose, Kubernetes), 1 on a single server.
    stream_replicas: int = 1
    # LINKFLOW_AUTH=off: no API key is checked (every service warns at start).
    auth: bool = True
    # Failed authentications per client address before 429 (SPEC, "Access").
    auth_failure_rate: str = "10/s"
    auth_failure_burst: int = 50
    # Tokens that mark a user agent as a bot, on top of the built-in list
    # (comma-separated, matched case-insensitively anywhere in it).
    bot_agents: str = ""

    def __post_init__(self) -> None:
        parse_rate(self.auth_failure_rate)  # refused at start, not at the first call
        if not 1 <= self.stream_replicas <= 5:
            raise SettingsError(f"stream_replicas: {self.stream_replicas} is not 1 to 5")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"log_format: {self.log_format!r} is neither json nor text")


class WorkerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The SPEC's per-worker settings (``LINKFLOW_<SERVICE>_<SETTING>``)."""

    workers: int = 1
    bulk_limit: int = 500
    max_attempts: int = 5
    max_ttl: float = 86400.0
    min_retry_delay: float = 1.0
    max_retry_delay: float = 60.0
    retry_delay_factor: float = 2.0
    # Not in the SPEC's table: how long JetStream waits for an ack before
    # redelivering; a batch still being handled signals progress every third.
    ack_wait: float = 30.0

    def retry_delay(self, attempt: int) -> float:
        """Delay before redelivery after the ``attempt``-th failed delivery (1-based)."""
        return Backoff(self.min_retry_delay, self.max_retry_delay, self.retry_delay_factor).delay(
            attempt
        )


def _raw_values(
    cls: type[msgspec.Struct], service: str | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    values: dict[str, Any] = {}
    for field in info.fields:
        names = [f"LINKFLOW_{field.name.upper()}"]
        if service:
            names.insert(0, f"LINKFLOW_{service.upper()}_{field.name.upper()}")
        name = next((n for n in names if n in environ), None)
        raw = None if name is None else environ[name]
        if isinstance(field.type, msgspec.inspect.StructType):
            # Nested groups (Common, WorkerSettings) share the service's prefix.
            values[field.name] = _raw_values(field.type.cls, service, environ)
            continue
        if raw is None:
            continue
        if isinstance(field.type, msgspec.inspect.FloatType):
            values[field.name] = parse_duration(raw)
        elif isinstance(field.type, msgspec.inspect.BoolType):
            values[field.name] = parse_bool(str(name), raw)
        else:
            values[field.name] = raw
    return values


def load(cls: type[T], service: str | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment, failing loudly on a bad value."""
    env = os.environ if environ is None else environ
    try:
        return msgspec.convert(_raw_values(cls, service, env), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{cls.__name__}: {exc}") from exc


def load_or_exit(cls: type[T], service: str) -> T:
    """A service's settings, or one line on stderr and exit status 2: a
    setting that cannot be read is the operator's to fix, not a traceback."""
    try:
        return load(cls, service)
    except SettingsError as exc:
        print(f"linkflow {service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
