"""Typed settings read from ``LINKFLOW_*`` environment variables.

Each service builds its settings once, in its entry point, with :func:`load`;
nothing else reads the environment. A field is looked up first as
``LINKFLOW_<SERVICE>_<FIELD>`` and then as ``LINKFLOW_<FIELD>``, so
``LINKFLOW_CLICK_RECORDER_MAX_ATTEMPTS`` overrides a shared
``LINKFLOW_MAX_ATTEMPTS``.

A field's type says how its text is read, once, here:

- :data:`Duration` (seconds, a float): ``250ms``, ``5s``, ``2m``, ``24h``,
  ``7d`` or bare seconds (``1.5``);
- a ratio (:func:`ratio`, :data:`Ratio`; a float): a bare number within the
  bounds the field declares, so ``0.85s`` is refused;
- :class:`Rate`: ``100/s``, ``6000/min``, ``1000/h``, kept as events per second;
- ``bool``: true/false, on/off, yes/no, 1/0;
- anything else (``int``, a plain ``float``, ``str``) as msgspec reads it.

A value that cannot be read is one line naming the variable:
``LINKFLOW_LINK_BUSY_ABOVE='0.85s' is not a number from 0 to 1``.
"""

from __future__ import annotations

import os
import re
import sys
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, TypeVar

import msgspec

from shared import roster
from shared.backoff import Backoff

T = TypeVar("T", bound=msgspec.Struct)


class SettingsError(ValueError):
    """A setting is missing or cannot be read; the service must not start."""


# What kind of setting a float is, in its annotation's msgspec.Meta.
_KIND: Final = "setting"

Duration = Annotated[float, msgspec.Meta(extra={_KIND: "duration"})]
"""Seconds, written ``250ms``, ``5s``, ``2m``, ``24h``, ``7d`` or bare (``1.5``)."""


def ratio(lo: float = 0.0, hi: float = 1.0) -> msgspec.Meta:
    """The annotation of a ratio field, a bare number from ``lo`` to ``hi``:
    ``Annotated[float, ratio(0, 1)]``."""
    return msgspec.Meta(ge=lo, le=hi, extra={_KIND: "ratio"})


Ratio = Annotated[float, ratio(0.0, 1.0)]
"""A bare number from 0 to 1 (a share, a load)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NUMBER = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"1s"``, ``"5m"``, ``"24h"``, ``"7d"`` or a bare number."""
    match = _DURATION.match(text)
    if match is None:
        raise SettingsError(f"{text!r} is not a duration (use e.g. 500ms, 1s, 5m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_ratio(text: str, lo: float = 0.0, hi: float = 1.0) -> float:
    """A bare number from ``lo`` to ``hi``: no unit (``0.85s`` is refused)."""
    if _NUMBER.match(text) is None or not lo <= (value := float(text)) <= hi:
        raise SettingsError(f"{text!r} is not a number from {lo:g} to {hi:g}")
    return value


class Rate(msgspec.Struct, frozen=True):
    """Events per second, written ``50/s``, ``600/min`` (or ``600/m``) or
    ``1000/h``, and read once, by :meth:`parse`."""

    per_second: float

    _TEXT: ClassVar[re.Pattern[str]] = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|min|h)\s*$")
    _PER: ClassVar[dict[str, float]] = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = cls._TEXT.match(text)
        if match is None or float(match.group(1)) <= 0:
            raise SettingsError(f"{text!r} is not a rate (use e.g. 50/s, 600/min, 1000/h)")
        return cls(float(match.group(1)) / cls._PER[match.group(2)])

    def __str__(self) -> str:
        return f"{self.per_second:g}/s"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """A typo (``ture``) stops the service instead of silently meaning False."""
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise SettingsError(f"{text!r} is not a boolean (use true/false, on/off, 1/0)")


class Common(msgspec.Struct, kw_only=True, frozen=True):
    # LINKFLOW_<SERVICE>_NATS_URL / _NATS_CREDS give one service its own
    # server and identity (a user:password@ URL, or a JWT + NKey creds file).
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str = ""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/linkflow"
    analytics_database_url: str = "postgresql://postgres@127.0.0.1:5432/linkflow_analytics"
    # The webhooks service's own database (its role makes its tables there);
    # empty: ``<database>_webhooks`` on the main database's server.
    webhooks_database_url: str = ""
    public_url: str = f"http://127.0.0.1:{roster.LINK.port}"
    # Where people open the web app (analytics serves it at /app/): the
    # gateway allows cross-origin API calls from this origin and no other
    # (several, comma-separated: compose's analytics replicas).
    app_url: str = f"http://127.0.0.1:{roster.ANALYTICS.port}"
    # Where people's browsers reach the webhooks service's API: the web app
    # calls it cross-origin (its CSP allows it; the service allows app_url).
    webhooks_url: str = f"http://127.0.0.1:{roster.WEBHOOKS.port}"
    # Where people's browsers reach a click-recorder's API (GET /api/clicks):
    # the web app's raw-clicks export button; empty (a recorder no browser
    # reaches, as compose's scaled ones): the web app offers no such button.
    click_recorder_url: str = ""
    log_level: str = "INFO"
    # JSON lines (SPEC) or "text" for reading in a terminal.
    log_format: str = "json"
    # CLICKS keeps clicks this long so they can be replayed (SPEC: default 7 days).
    clicks_max_age: Duration = 7 * 86400.0
    # Copies of every stream and KV bucket that `linkflow migrate` keeps: 3 on
    # a three-node cluster (compose, Kubernetes), 1 on a single server.
    stream_replicas: int = 1
    # LINKFLOW_AUTH=off: no API key is checked (every service warns at start).
    auth: bool = True
    # Failed authentications per client address before 429 (SPEC, "Access").
    auth_failure_rate: Rate = Rate(10.0)
    auth_failure_burst: int = 50
    # Tokens that mark a user agent as a bot, on top of the built-in list
    # (comma-separated, matched case-insensitively anywhere in it).
    bot_agents: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.stream_replicas <= 5:
            raise SettingsError(f"stream_replicas: {self.stream_replicas} is not 1 to 5")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"log_format: {self.log_format!r} is neither json nor text")


class WorkerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The SPEC's per-worker settings (``LINKFLOW_<SERVICE>_<SETTING>``)."""

    workers: int = 1
    bulk_limit: int = 500
    max_attempts: int = 5
    max_ttl: Duration = 86400.0
    min_retry_delay: Duration = 1.0
    max_retry_delay: Duration = 60.0
    # A bare number: each delay is the last one times this (below 1 counts as 1).
    retry_delay_factor: float = 2.0
    # Not in the SPEC's table: how long JetStream waits for an ack before
    # redelivering; a batch still being handled signals progress every third.
    ack_wait: Duration = 30.0

    def retry_delay(self, attempt: int) -> float:
        """Delay before redelivery after the ``attempt``-th failed delivery (1-based)."""
        return Backoff(self.min_retry_delay, self.max_retry_delay, self.retry_delay_factor).delay(
            attempt
        )


class Listen(msgspec.Struct, kw_only=True, frozen=True):
    """Where a service's HTTP server listens: every service's Settings
    extends it (and names its own default port, shared.roster), and a
    command that asks a service on this host (``linkflow probe``) reads the
    same fields the same way, with :func:`port`."""

    host: str = "127.0.0.1"
    # None: the service's default (shared.roster); its Settings says which.
    port: int | None = None


def port(service: roster.Service, environ: Mapping[str, str] | None = None) -> int:
    """The port ``service`` listens on, read as the service reads its own
    (``LINKFLOW_<SERVICE>_PORT``, then ``LINKFLOW_PORT``, else its default)."""
    found = load(Listen, service.name, environ).port
    return service.port if found is None else found


class CommandSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The ``linkflow`` command's own (a subcommand loads the settings it needs)."""

    log_level: str = "WARNING"


class Placement(msgspec.Struct, kw_only=True, frozen=True):
    """Where ``linkflow`` runs the work behind the redirect (shared.priority)."""

    # LINKFLOW_BACKGROUND_CGROUP=on: the workers and webhooks join one
    # idle-class CPU cgroup once ready, where the machine lets linkflow make
    # one; off (the default): nice 19 and their autogroups alone.
    background_cgroup: bool = False
    # Set by linkflow up in the environment of each process it may lower,
    # to its own pid: the one parent whose priority that process returns
    # to when told to stop (shared.priority.leave_background). 0: none.
    starter: int = 0


def _kind(annotation: Any) -> tuple[str | None, msgspec.Meta | None]:
    """A float field's kind (``"duration"``, ``"ratio"``) and its Meta, from
    ``Annotated[float, msgspec.Meta(extra={"setting": ...})]``."""
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, msgspec.Meta) and meta.extra and _KIND in meta.extra:
                return str(meta.extra[_KIND]), meta
    return None, None


def _parse(annotation: Any, text: str) -> Any:
    """A setting's value from its text, by its declared type; SettingsError
    (saying what the text is not) if it cannot be read."""
    kind, meta = _kind(annotation)
    if kind == "duration":
        return parse_duration(text)
    if kind == "ratio" and meta is not None and meta.ge is not None and meta.le is not None:
        return parse_ratio(text, meta.ge, meta.le)
    if annotation is Rate:
        return Rate.parse(text)
    if annotation is bool:
        return parse_bool(text)
    try:
        return msgspec.convert(text, annotation, strict=False)
    except msgspec.ValidationError as exc:
        # int | None (Listen.port) reads as an int.
        kinds = set(typing.get_args(annotation)) - {type(None)} or {annotation}
        what = {int: "is not a whole number", float: "is not a number"}
        said = what.get(next(iter(kinds))) if len(kinds) == 1 else None
        raise SettingsError(f"{text!r} {said or f'cannot be read: {exc}'}") from None


def _raw_values(
    cls: type[msgspec.Struct], service: str | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        group = isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        if group and field.type is not Rate:
            # Nested groups (Common, WorkerSettings) share the service's prefix.
            values[field.name] = _raw_values(field.type, service, environ)
            continue
        names = [f"LINKFLOW_{field.name.upper()}"]
        if service:
            names.insert(0, f"LINKFLOW_{service.upper()}_{field.name.upper()}")
        name = next((n for n in names if n in environ), None)
        if name is None:
            continue
        try:
            values[field.name] = _parse(field.type, environ[name])
        except SettingsError as exc:
            raise SettingsError(f"{name}={exc}") from None
    return values


def load(cls: type[T], service: str | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment, each value read by its field's
    type; a value that cannot be read is a SettingsError of one line."""
    env = os.environ if environ is None else environ
    values = _raw_values(cls, service, env)
    try:
        # The values are typed already: this builds the groups and runs the
        # checks across fields (__post_init__).
        return msgspec.convert(values, cls)
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
