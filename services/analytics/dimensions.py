"""What a click is counted under: referrer host and country (device class,
browser and OS come from ``shared.useragent``)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

DIRECT: Final = "(direct)"
UNKNOWN: Final = "(unknown)"


def referrer_host(referrer: str | None) -> str:
    if not referrer:
        return DIRECT
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return UNKNOWN
    return host.lower().removeprefix("www.") if host else UNKNOWN


def country(code: str | None) -> str:
    return code.upper() if code else UNKNOWN
