"""The link API's bodies: what each call takes and gives, as declared types.

Validation (``services.link.validation``) produces ``NewLink`` and
``LinkChanges``; the routes answer with the others. The OpenAPI document's
schemas are generated from these Structs (``shared.http.openapi``), so a
client generated from it reads exactly what is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from shared.contracts import (
    MAX_DESTINATIONS,
    MAX_RULES,
    MIN_DESTINATIONS,
    Code,
    Destination,
    DomainHost,
    Preview,
    Rule,
    Timestamp,
    When,
    rfc3339,
)

MAX_URL: Final = 2048
MAX_TAGS: Final = 20
MAX_TAG: Final = 64
MAX_VISITS: Final = 2**31 - 1

Url = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_URL,
        description="absolute http or https URL with a host, no credentials, not this gateway",
    ),
]
RedirectType = Literal[301, 302, 307, 308]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)]
MaxVisits = Annotated[
    int,
    msgspec.Meta(ge=1, le=MAX_VISITS, description="human clicks after which the link answers 410"),
]
Rules = Annotated[
    list[Rule],
    msgspec.Meta(
        max_length=MAX_RULES,
        description="the first rule whose every condition holds gives the target",
    ),
]
Destinations = Annotated[
    list[Destination],
    msgspec.Meta(
        min_length=MIN_DESTINATIONS,
        max_length=MAX_DESTINATIONS,
        description="an A/B split: when no rule matched, the target is drawn by weight, "
        "the same for one visitor all day; null: none",
    ),
]
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 128
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=MIN_PASSWORD,
        max_length=MAX_PASSWORD,
        description="write-only: visitors must enter it before the redirect; "
        "kept only as an Argon2id hash",
    ),
]
# Times answered: RFC 3339 UTC with milliseconds, as on the bus.
Instant = Annotated[
    str, msgspec.Meta(extra_json_schema={"format": "date-time"}, description="RFC 3339 UTC")
]


class NewLink(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/links``: a new link (only ``url`` is required)."""

    url: Url
    code: (
        Annotated[Code, msgspec.Meta(description="your own code; 7 random characters if absent")]
        | UnsetType
    ) = UNSET
    domain: DomainHost | None = None
    redirect_type: RedirectType = 302
    expires_at: Timestamp | None = None
    tags: Tags = []
    max_visits: MaxVisits | None = None
    forward_query: Annotated[
        bool, msgspec.Meta(description="append the visitor's query string to the target")
    ] = False
    rules: Rules = []
    destinations: Destinations | None = None
    preview: Preview | None = None
    password: Password | None = None


class LinkChanges(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``PATCH /api/links/{code}``: the fields to change (any of them; null
    clears ``expires_at``, ``max_visits`` and ``password``)."""

    url: Url | UnsetType = UNSET
    redirect_type: RedirectType | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    max_visits: MaxVisits | UnsetType | None = UNSET
    forward_query: bool | UnsetType = UNSET
    rules: Rules | UnsetType = UNSET
    destinations: Destinations | UnsetType | None = UNSET
    preview: Preview | UnsetType | None = UNSET
    password: Password | UnsetType | None = UNSET

    def given(self) -> dict[str, Any]:
        """The fields the caller sent, by column name."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


class Link(msgspec.Struct, kw_only=True, frozen=True):
    """A short link."""

    code: Code
    domain: DomainHost | None
    url: str
    short_url: Annotated[str, msgspec.Meta(description="the public URL that redirects")]
    redirect_type: RedirectType
    tags: list[str]
    expires_at: Instant | None
    max_visits: int | None
    forward_query: bool
    rules: list[Rule]
    destinations: list[Destination] | None
    preview: Preview | None
    password_protected: Annotated[
        bool, msgspec.Meta(description="a password is asked before the redirect")
    ]
    version: Annotated[int, msgspec.Meta(ge=1, description="increases by one on every change")]
    created_at: Instant
    updated_at: Instant


class LinkPage(msgspec.Struct, kw_only=True, frozen=True):
    """One page of links, newest first."""

    items: list[Link]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="pass as `cursor` for the next page; null: no more")
    ]


class LinkVersion(Link, kw_only=True, frozen=True):
    """A link as it was after one change, and the key that made it."""

    deleted_at: Instant | None
    changed_by: Annotated[str | None, msgspec.Meta(description="the API key's name")]


class LinkHistory(msgspec.Struct, kw_only=True, frozen=True):
    """Every version of a link since it was created, newest first."""

    items: list[LinkVersion]


class RowError(msgspec.Struct, frozen=True):
    """A CSV row not imported, and why."""

    line: int
    message: str


class ImportedLink(msgspec.Struct, kw_only=True, frozen=True):
    line: int
    code: Code
    domain: DomainHost | None = None
    short_url: str


class ImportResult(msgspec.Struct, kw_only=True, frozen=True):
    """What an import did: rows imported, rows already there, rows refused."""

    imported: int
    skipped: Annotated[int, msgspec.Meta(description="rows whose code already held the same URL")]
    errors: list[RowError]
    links: list[ImportedLink]


Host = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=253,
        description="a host name (lower case, IDNA form), no scheme, port or path",
    ),
]
DomainRedirect = Annotated[
    Url,
    msgspec.Meta(description="an absolute http or https URL, not on this domain; null: a 404"),
]


class NewDomain(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/domains``: a short domain whose DNS points at the gateway."""

    host: Host
    base_url_redirect: DomainRedirect | None = None
    not_found_redirect: DomainRedirect | None = None


class DomainChanges(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``PATCH /api/domains/{host}``: the redirects to change (null: none)."""

    base_url_redirect: DomainRedirect | UnsetType | None = UNSET
    not_found_redirect: DomainRedirect | UnsetType | None = UNSET


class Domain(msgspec.Struct, kw_only=True, frozen=True):
    """A short domain and where a visit that finds no link on it goes."""

    host: Host
    is_default: Annotated[bool, msgspec.Meta(description="the host of LINKFLOW_PUBLIC_URL")]
    base_url_redirect: Annotated[
        str | None, msgspec.Meta(description="where a visit to / goes (302); null: 404")
    ]
    not_found_redirect: Annotated[
        str | None,
        msgspec.Meta(description="where a visit to an unknown or deleted code goes (302)"),
    ]
    created_at: Instant | None
    updated_at: Instant | None


class DomainList(msgspec.Struct, kw_only=True, frozen=True):
    """Every domain, the default first."""

    items: list[Domain]


def instant(t: datetime | None) -> str | None:
    return rfc3339(t) if t is not None else None


# The document's examples.
_AT: Final = "2026-12-02T09:30:00.000Z"
EXAMPLE_RULE: Final = Rule(when=When(device=["mobile"]), url="https://m.example.com/launch")
EXAMPLE_NEW: Final = NewLink(
    url="https://example.com/launch", code="launch", tags=["campaign"], rules=[EXAMPLE_RULE]
)
EXAMPLE_CHANGES: Final = LinkChanges(url="https://example.com/launch-v2", expires_at=None)
EXAMPLE_LINK: Final = Link(
    code="launch",
    domain=None,
    url="https://example.com/launch",
    short_url="https://sho.rt/launch",
    redirect_type=302,
    tags=["campaign"],
    expires_at=None,
    max_visits=None,
    forward_query=False,
    rules=[EXAMPLE_RULE],
    destinations=None,
    preview=Preview(title="Our launch", description="Everything new this season"),
    password_protected=False,
    version=1,
    created_at=_AT,
    updated_at=_AT,
)
EXAMPLE_PAGE: Final = LinkPage(items=[EXAMPLE_LINK], next_cursor=None)
EXAMPLE_HISTORY: Final = LinkHistory(
    items=[
        LinkVersion(**msgspec.structs.asdict(EXAMPLE_LINK), deleted_at=None, changed_by="marketing")
    ]
)
EXAMPLE_IMPORT: Final = ImportResult(
    imported=1,
    skipped=0,
    errors=[RowError(3, "url: must be an absolute http or https URL")],
    links=[ImportedLink(line=2, code="launch", domain=None, short_url="https://sho.rt/launch")],
)
EXAMPLE_NEW_DOMAIN: Final = NewDomain(
    host="go.example.com", not_found_redirect="https://example.com/not-found"
)
EXAMPLE_DOMAIN_CHANGES: Final = DomainChanges(base_url_redirect="https://example.com/")
EXAMPLE_DOMAIN: Final = Domain(
    host="go.example.com",
    is_default=False,
    base_url_redirect=None,
    not_found_redirect="https://example.com/not-found",
    created_at=_AT,
    updated_at=_AT,
)
EXAMPLE_DOMAINS: Final = DomainList(
    items=[
        Domain(
            host="sho.rt",
            is_default=True,
            base_url_redirect=None,
            not_found_redirect=None,
            created_at=None,
            updated_at=None,
        ),
        EXAMPLE_DOMAIN,
    ]
)
