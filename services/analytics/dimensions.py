"""What a click is counted under: referrer host, country, device class."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

DIRECT: Final = "(direct)"
UNKNOWN: Final = "(unknown)"
_TABLET: Final = re.compile(r"ipad|tablet|kindle|silk|playbook|nexus (7|9|10)|sm-t\d", re.I)
_MOBILE: Final = re.compile(r"mobi|iphone|ipod|android|phone|blackberry|opera mini|iemobile", re.I)


def device(user_agent: str | None, is_bot: bool) -> str:
    if is_bot:
        return "bot"
    if not user_agent:
        return "desktop"
    if _TABLET.search(user_agent) or (
        "android" in user_agent.lower() and "mobile" not in user_agent.lower()
    ):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    return "desktop"


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
