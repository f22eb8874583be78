"""Message contracts: one msgspec Struct per subject of the SPEC.

These Structs are the single source of truth: ``shared/schemas/*.json`` and
``shared/asyncapi.yaml`` are generated from them (``linkflow schemas``) and a
test fails when the files drift. Readers ignore unknown fields (msgspec does
by default), so producers may add fields; removing or retyping one needs a
new subject version.
"""

from __future__ import annotations

import functools
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
import msgspec.inspect

Code = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{3,64}$", description="Short code, case-sensitive")
]
Version = Annotated[int, msgspec.Meta(ge=1, description="Increases by one on every change")]
RedirectType = Annotated[int, msgspec.Meta(ge=301, le=308, description="301, 302, 307 or 308")]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 UTC")]
RuleIndex = Annotated[
    int, msgspec.Meta(ge=0, description="Index of the redirect rule that matched")
]
DestinationIndex = Annotated[
    int,
    msgspec.Meta(ge=0, description="Index of the A/B destination drawn; null: none was drawn"),
]

# What decoding bytes from outside can raise: msgspec's DecodeError (its
# ValidationError included). The locked msgspec (0.23) reports bytes that are
# not UTF-8 as a DecodeError too; UnicodeDecodeError stays for the versions
# that let it through (seen in the session that added it).
INVALID: Final = (msgspec.DecodeError, UnicodeDecodeError)


DEVICES: Final = ("mobile", "tablet", "desktop")
OSES: Final = ("ios", "android", "windows", "macos", "linux")
MAX_RULES: Final = 20
# A/B destinations (SPEC: destinations): 2 to 10, weights 1 to 1000.
MIN_DESTINATIONS: Final = 2
MAX_DESTINATIONS: Final = 10
MAX_WEIGHT: Final = 1000


class When(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A redirect rule's conditions (SPEC, "rules"): every one given must hold.
    The gateway checks the values when a link is written; readers trust them."""

    device: list[str] | None = None
    os: list[str] | None = None
    language: list[str] | None = None
    country: list[str] | None = None
    query: dict[str, str] | None = None
    after: Timestamp | None = None
    before: Timestamp | None = None


class Rule(msgspec.Struct, kw_only=True, frozen=True):
    """``{when, url}``: the first rule whose every condition holds gives the target."""

    when: When
    url: str


class Destination(msgspec.Struct, kw_only=True, frozen=True):
    """``{url, weight}``: one side of an A/B split, drawn by weight when no
    rule matched (the same for one visitor all day)."""

    url: str
    weight: Annotated[int, msgspec.Meta(ge=1, le=MAX_WEIGHT)]


class Preview(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a chat app's or social site's card of the link shows (og: and
    twitter: tags, served to link-preview fetchers instead of a redirect)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | None = None
    image: (
        Annotated[
            str, msgspec.Meta(max_length=2048, description="an absolute http or https image URL")
        ]
        | None
    ) = None


_preview_decoder = msgspec.json.Decoder(Preview | None)


def decode_preview(data: str | bytes | None) -> Preview | None:
    """A preview stored as JSON (a jsonb column); None: none."""
    return None if data is None else _preview_decoder.decode(data)


_destinations_decoder = msgspec.json.Decoder(list[Destination] | None)


def decode_destinations(data: str | bytes | None) -> list[Destination] | None:
    """Destinations stored as JSON (a jsonb column); None: not split."""
    return None if data is None else _destinations_decoder.decode(data)


_rules_decoder = msgspec.json.Decoder(list[Rule])

# A short domain's host: lower case, IDNA form, no port.
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_PATTERN: Final = rf"^{_LABEL}(?:\.{_LABEL})*$"
DomainHost = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=253,
        pattern=HOST_PATTERN,
        description="the link's short domain (its host); null: the default domain",
    ),
]


def link_key(domain: str | None, code: str) -> str:
    """A link's key in KV ``links`` and ``link_visits``: its code on the
    default domain, ``<host>/<code>`` on another (a code holds no ``/``)."""
    return code if domain is None else f"{domain}/{code}"


def split_link_key(key: str) -> tuple[str | None, str]:
    """``(domain, code)`` of a :func:`link_key`."""
    domain, _, code = key.rpartition("/")
    return domain or None, code


def decode_rules(data: str | bytes) -> list[Rule]:
    """Rules stored as JSON (the links table's jsonb column, as asyncpg hands it over)."""
    return _rules_decoder.decode(data) if data != "[]" else []


class LinkCreated(msgspec.Struct, kw_only=True, frozen=True):
    """``links.created``: published fire-and-forget (core NATS), kept by stream LINKS."""

    code: Code
    domain: DomainHost | None = None
    url: str
    created_at: Timestamp
    tags: list[str] = []


class LinkUpdated(msgspec.Struct, kw_only=True, frozen=True):
    """``links.updated`` on stream ``LINKS``: must be delivered."""

    code: Code
    domain: DomainHost | None = None
    url: str
    redirect_type: RedirectType
    expires_at: Timestamp | None
    tags: list[str]
    version: Version
    updated_at: Timestamp
    # Added after the first SPEC table (readers ignore what they don't know,
    # and an older event without them means none of them).
    max_visits: Annotated[int, msgspec.Meta(ge=1)] | None = None
    forward_query: bool = False
    rules: list[Rule] = []
    # When the link was created (or its code taken again): the generation
    # that visit counts belong to.
    created_at: Timestamp | None = None
    destinations: list[Destination] | None = None
    preview: Preview | None = None
    # Whether a password guards the link; never the password or its hash
    # (the cache-refresher reads the hash from the link's row).
    password_protected: bool = False


class LinkDeleted(msgspec.Struct, kw_only=True, frozen=True):
    """``links.deleted`` on stream ``LINKS``: must be delivered."""

    code: Code
    domain: DomainHost | None = None
    version: Version
    deleted_at: Timestamp


_CLICK_TEXTS: Final = ("id", "referrer", "user_agent", "ip", "country", "request_id")


def click_id() -> str:
    """A new click's id: time-ordered (so the clicks primary key grows at one
    end) and unique: 48 random bits after the nanoseconds. ``random`` is
    seeded from the OS and reseeded in forked children; ids need uniqueness,
    not secrecy, and ``os.urandom`` would cost a system call per redirect."""
    return f"{(time.time_ns() << 48) | random.getrandbits(48):028x}"


class Click(msgspec.Struct, kw_only=True, frozen=True):
    """``clicks.<code>`` on ``CLICKS``, one per 3xx redirect; no text field holds U+0000."""

    id: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=64, description="Unique click id, also Nats-Msg-Id"),
    ]
    code: Code
    domain: DomainHost | None = None
    ts: Timestamp
    referrer: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    country: Annotated[str, msgspec.Meta(max_length=2)] | None = None
    is_bot: bool = False
    request_id: str | None = None
    rule: RuleIndex | None = None
    destination: DestinationIndex | None = None
    visitor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern="^[0-9a-f]{32}$",
                description="Hash of the day's salt, full IP, user agent and code",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        # PostgreSQL's text cannot hold U+0000: a click carrying it could
        # never be stored, so it is invalid here (and dead-lettered alone)
        # rather than refused by the database with its whole batch.
        # One scan of all the fields: decoding is the consumers' hot path.
        text = f"{self.id}{self.referrer}{self.user_agent}{self.ip}{self.country}"
        if "\x00" in text or (self.request_id and "\x00" in self.request_id):
            bad = [name for name in _CLICK_TEXTS if "\x00" in (getattr(self, name) or "")]
            raise ValueError(f"{', '.join(bad)} contains a NUL character")


class LinkEntry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Value of the KV bucket ``links`` (key: :func:`link_key`, the code on
    the default domain).

    A deleted link stays as a tombstone with its version so that a late,
    older ``links.updated`` can be recognised as stale and ignored.
    """

    url: str
    redirect_type: int = 302
    expires_at: datetime | None = None
    version: int = 1
    deleted: bool = False
    forward_query: bool = False
    max_visits: int | None = None
    rules: list[Rule] = []
    # The link's generation (a code deleted and taken again starts a new
    # one): a VisitCount applies only to the generation it names.
    created_at: datetime | None = None
    destinations: list[Destination] | None = None
    preview: Preview | None = None
    # The Argon2id hash of the link's password (None: no password): the
    # gateway checks a password from memory. Only the gateway and the
    # cache-refresher write this bucket, and no event carries the hash.
    password_hash: str | None = None


class VisitCount(msgspec.Struct, kw_only=True, frozen=True):
    """Value of the KV bucket ``link_visits`` (key: the code): the human
    clicks counted for a link with ``max_visits`` since ``since``, its
    ``created_at``. Written by analytics, which counts each click once; every
    gateway watches it and answers 410 once ``visits`` reaches the limit."""

    since: datetime
    visits: int


REDIRECTS_BUSY: Final = "redirects.busy"


class RedirectsBusy(msgspec.Struct, kw_only=True, frozen=True):
    """``redirects.busy``: core NATS, fire-and-forget fan-out. A gateway whose
    event loop wants most of a CPU says so every quarter second; the work
    behind the redirect (click-recorder, analytics) holds off for ``hold``
    seconds after the last one, within its ``yield_lag``, and JetStream keeps
    the clicks meanwhile."""

    gateway: Annotated[str, msgspec.Meta(description="host:port of the gateway")]
    load: Annotated[
        float,
        msgspec.Meta(
            ge=0, description="share of one CPU its event loop ran or waited to run, last interval"
        ),
    ]
    hold: Annotated[float, msgspec.Meta(gt=0, le=10, description="seconds the signal lasts")]


ORPHAN_VISITS: Final = "visits.orphan"
# What an orphan visit was (SPEC, "Subjects and streams"): a visit to ``/``,
# a path that cannot be a code, a code no link has (or had: deleted).
BASE_URL: Final = "base_url"
INVALID_CODE: Final = "invalid_code"
NOT_FOUND: Final = "not_found"
ORPHAN_KINDS: Final = (BASE_URL, INVALID_CODE, NOT_FOUND)
# The longest path an orphan visit carries, and the path that sums the
# visits past a gateway's 1,000 paths of one second.
ORPHAN_PATH_CUT: Final = 256
ORPHAN_OTHERS: Final = "*"


class OrphanVisits(msgspec.Struct, kw_only=True, frozen=True):
    """``visits.orphan``: core NATS, fire-and-forget. Requests a gateway
    answered with no link, summed per second and ``(domain, kind, path)``:
    at most one message per key and second, at most 1,000 paths a second
    (the rest under path ``*``)."""

    domain: (
        Annotated[str, msgspec.Meta(description="the request's domain; null: the default domain")]
        | None
    )
    kind: Annotated[
        str,
        msgspec.Meta(
            pattern="^(base_url|invalid_code|not_found)$",
            description="base_url: `/`; invalid_code: a path that is not a code; "
            "not_found: an unknown or deleted code",
        ),
    ]
    path: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=ORPHAN_PATH_CUT,
            description="the request's path (no query), cut to 256 characters; "
            "`*`: the visits past the gateway's 1,000 paths of that second",
        ),
    ]
    count: Annotated[int, msgspec.Meta(ge=1, description="visits in [from, to)")]
    from_: Annotated[
        datetime, msgspec.Meta(tz=True, description="the counting window's start, RFC 3339 UTC")
    ] = msgspec.field(name="from")
    to: Annotated[
        datetime, msgspec.Meta(tz=True, description="the counting window's end (excluded)")
    ]


# A links.* dead letter is replayed by the cache-refresher re-reading the
# link from PostgreSQL: nobody but the gateway publishes links.*. The
# request is answered on a subject under LINK_REFRESHED (one per request),
# which only the cache-refresher may publish to and only analytics reads.
LINK_REFRESH: Final = "linkflow.cache-refresher.refresh"
LINK_REFRESHED: Final = "linkflow.cache-refresher.refreshed"


class LinkRefresh(msgspec.Struct, kw_only=True, frozen=True):
    """``linkflow.cache-refresher.refresh``: core NATS request to the
    cache-refresher (a queue group: one replica answers) to write one link's
    KV entry from its PostgreSQL row, never to an older version."""

    code: Code
    domain: DomainHost | None = None


class LinkRefreshed(msgspec.Struct, kw_only=True, frozen=True):
    """The cache-refresher's answer to a ``LinkRefresh``: the version KV
    ``links`` now holds for the code (None: no such link in the database,
    nothing written)."""

    code: Code
    version: Version | None
    domain: DomainHost | None = None


# DLQ headers added to the original ones (SPEC, "Subjects and streams").
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_REQUEST_ID: Final = "X-Request-Id"
# The most of a caller's X-Request-Id carried on (in a click, an event's
# headers, a log line): longer ones are cut, never refused.
REQUEST_ID_CUT: Final = 128
HDR_ENQUEUED_AT: Final = "Linkflow-Enqueued-At"
HDR_ORIGINAL_SUBJECT: Final = "Linkflow-Original-Subject"
HDR_STREAM_SEQ: Final = "Linkflow-Stream-Seq"
HDR_ATTEMPTS: Final = "Linkflow-Attempts"
HDR_ERROR: Final = "Linkflow-Error"
HDR_FIRST_FAILED_AT: Final = "Linkflow-First-Failed-At"
HDR_FAILED_AT: Final = "Linkflow-Failed-At"
# A dead letter keeps its original Nats-Msg-Id here (its own is per consumer
# and sequence); a replayed message names the DLQ sequence it came from.
HDR_ORIGINAL_MSG_ID: Final = "Linkflow-Original-Msg-Id"
HDR_REPLAYED_FROM: Final = "Linkflow-Replayed-From"
DLQ_HEADERS: Final = (
    HDR_ORIGINAL_SUBJECT,
    HDR_STREAM_SEQ,
    HDR_ATTEMPTS,
    HDR_ERROR,
    HDR_FIRST_FAILED_AT,
    HDR_FAILED_AT,
)

# Subject -> payload contract, the table AsyncAPI and the schemas are built from.
SUBJECTS: Final[dict[str, tuple[type[msgspec.Struct], str, str]]] = {
    "links.created": (
        LinkCreated,
        "core NATS, kept by stream LINKS",
        "a new link, published without waiting for storage; kept for durable consumers",
    ),
    "links.updated": (LinkUpdated, "stream LINKS", "a link changed; apply if version is newer"),
    "links.deleted": (LinkDeleted, "stream LINKS", "a link was deleted"),
    "clicks.{code}": (Click, "stream CLICKS", "one click on a short link"),
    REDIRECTS_BUSY: (RedirectsBusy, "core NATS", "a gateway near its capacity: workers hold off"),
    ORPHAN_VISITS: (
        OrphanVisits,
        "core NATS",
        "requests that matched no link, summed per gateway, second and (domain, kind, path)",
    ),
    LINK_REFRESH: (
        LinkRefresh,
        "core NATS request",
        "analytics asks the cache-refresher to rewrite one link's KV entry from the database"
        " (DLQ replay of a links.* letter)",
    ),
    LINK_REFRESHED + ".{id}": (
        LinkRefreshed,
        "core NATS reply",
        "the cache-refresher's answer to one refresh request",
    ),
}


def millis(t: datetime) -> datetime:
    """``t`` at millisecond precision, as every payload carries times: a time
    read from PostgreSQL (microseconds) compares equal to its copy on the wire."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def now() -> datetime:
    """The current time in UTC at millisecond precision, as every payload carries it."""
    return millis(datetime.now(UTC))


def rfc3339(t: datetime) -> str:
    """``2026-11-22T06:50:13.123Z``: the SPEC's wire format for times. The
    year has four digits whatever it is (strftime's ``%Y`` writes year 166
    as ``166``, which no RFC 3339 reader accepts)."""
    t = t.astimezone(UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


_encoder: Final = msgspec.json.Encoder()


def encode(struct: msgspec.Struct) -> bytes:
    """JSON bytes with times as the SPEC's millisecond RFC 3339 (msgspec writes
    microseconds and drops a zero fraction, which other-language readers of
    the contract should not have to expect)."""
    out = msgspec.structs.asdict(struct)
    for name, value in out.items():
        if isinstance(value, datetime):
            out[name] = rfc3339(value)
    # Times nested deeper (a rule's after and before) too. A click, the hot
    # path, has no field that holds a struct: it pays one lookup.
    for name in _holding_structs(type(struct)):
        if out[name]:
            out[name] = _times(msgspec.to_builtins(out[name], builtin_types=(datetime,)))
    # A field named as Python cannot (OrphanVisits' ``from``) goes out by its wire name.
    for name, wire in _renamed(type(struct)):
        out[wire] = out.pop(name)
    return _encoder.encode(out)


@functools.cache
def _renamed(cls: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple((f.name, f.encode_name) for f in info.fields if f.name != f.encode_name)


@functools.cache
def _holding_structs(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(f.name for f in info.fields if _holds_struct(f.type))


def _holds_struct(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.StructType):
        return True
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_holds_struct(option) for option in t.types)
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return _holds_struct(t.item_type)
    return False


def _times(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {k: _times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v) for v in value]
    return value
