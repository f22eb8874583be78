"""What a click is counted under: referrer host, country, device class."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from shared.useragent import agent

DIRECT: Final = "(direct)"
UNKNOWN: Final = "(unknown)"


def device(user_agent: str | None, is_bot: bool) -> str:
    """The class the gateway's rules use (shared.useragent), or ``bot``."""
    return "bot" if is_bot else agent(user_agent).device


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
