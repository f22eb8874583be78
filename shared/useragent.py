"""What a user agent says about the visitor: device class, operating system
and browser, from ua-parser (uap-core's maintained regexes), and whether it
is a bot; each cached per user agent. Used by the gateway (rules, a click's
``is_bot``) and analytics (dimensions, re-classifying the past)."""

from __future__ import annotations

import functools
import re
from typing import Final, NamedTuple

import ua_parser

OTHER: Final = "other"
# The fetchers chat apps and social sites send to draw a link's card (Slack,
# Discord, X, Facebook, LinkedIn, WhatsApp, Telegram, iMessage, which sends
# "facebookexternalhit/1.1 Facebot Twitterbot/1.0", and the like): a link
# with a preview shows them its card instead of redirecting. Each is a bot.
PREVIEW_TOKENS: Final = (
    "slackbot-linkexpanding|slack-imgproxy|discordbot|twitterbot|facebookexternalhit|"
    "facebot|linkedinbot|whatsapp|telegrambot|skypeuripreview|redditbot|pinterestbot|"
    "vkshare|embedly|iframely|mastodon|bluesky|cardyb|microsoftpreview|google-pagerenderer"
)
# Crawlers, link-preview fetchers and HTTP libraries (the isbot list's most
# common tokens). Matched against the lower-cased user agent: a
# case-insensitive search over this alternation costs some 20 µs per browser
# user agent, this about 2 µs.
BOT_TOKENS: Final = (
    f"{PREVIEW_TOKENS}|"
    "bot|crawl|spider|slurp|preview|telegram|"
    "slack|discord|skype|pinterest|quora link|bitlybot|outbrain|nuzzel|"
    "headless|lighthouse|curl|wget|python-|httpx|aiohttp|go-http-client|okhttp|java/|"
    "libwww|apache-httpclient|axios|node-fetch|monitor|uptime"
)
_bots = re.compile(BOT_TOKENS)
_previews = re.compile(PREVIEW_TOKENS)
# uap-core's OS families, folded into the SPEC's names.
_OS: Final = {
    "ios": "ios",
    "ipados": "ios",
    "android": "android",
    "windows": "windows",
    "mac os x": "macos",
    "macos": "macos",
    "linux": "linux",
    "ubuntu": "linux",
    "debian": "linux",
    "fedora": "linux",
    "arch linux": "linux",
    "red hat": "linux",
    "suse": "linux",
    "gentoo": "linux",
    "mint": "linux",
    "chrome os": "chromeos",
}
# Tablets uap-core names by device; an Android without "Mobile" is one too
# (Google's guidance to tablet browsers).
_TABLET: Final = re.compile(r"ipad|tablet|kindle|silk|playbook|nexus (7|9|10)|sm-t\d|sm-x\d", re.I)
_MOBILE_OS: Final = frozenset({"ios", "android"})


class Agent(NamedTuple):
    device: str  # mobile, tablet or desktop
    os: str  # ios, android, windows, macos, linux, chromeos or other
    browser: str  # uap-core's family: Chrome, Mobile Safari, Firefox, ... or Other


UNKNOWN_AGENT: Final = Agent("desktop", OTHER, "Other")


@functools.lru_cache(maxsize=8192)
def classify(user_agent: str) -> Agent:
    """One parse per distinct user agent (about 0.5 ms; visitors share a few
    thousand at most, so the cache answers the rest in a lookup)."""
    parsed = ua_parser.parse(user_agent)
    os_family = parsed.os.family if parsed.os else ""
    os = _OS.get(os_family.lower(), OTHER)
    device_family = parsed.device.family if parsed.device else ""
    brand = parsed.device.brand or "" if parsed.device else ""
    if (
        _TABLET.search(device_family)
        or "tablet" in brand.lower()
        or (os == "android" and "mobile" not in user_agent.lower())
        or device_family == "iPad"
    ):
        device = "tablet"
    elif os in _MOBILE_OS or device_family in ("iPhone", "iPod"):
        device = "mobile"
    else:
        device = "desktop"
    browser = parsed.user_agent.family if parsed.user_agent else "Other"
    return Agent(device, os, browser)


def agent(user_agent: str | None) -> Agent:
    return classify(user_agent) if user_agent else UNKNOWN_AGENT


def add_bot_tokens(tokens: str) -> None:
    """The operator's own tokens (``LINKFLOW_BOT_AGENTS``, comma-separated,
    e.g. an in-house monitor) on top of the built-in list, set once at start.
    A list that changed can be applied to the past with a re-classifying
    backfill."""
    global _bots
    extra = [re.escape(t.strip().lower()) for t in tokens.split(",") if t.strip()]
    _bots = re.compile("|".join([BOT_TOKENS, *extra]))
    _bot_agent.cache_clear()


def is_preview_fetcher(user_agent: str | None) -> bool:
    """Whether ``user_agent`` is a link-preview fetcher (see PREVIEW_TOKENS)."""
    return user_agent is not None and _previews.search(user_agent.lower()) is not None


def is_bot_agent(user_agent: str | None) -> bool:
    return user_agent is not None and _bot_agent(user_agent)


@functools.lru_cache(maxsize=4096)
def _bot_agent(user_agent: str) -> bool:
    return _bots.search(user_agent.lower()) is not None


def warm() -> None:
    """Compile the regexes now (about 80 ms), not on the first visitor's redirect."""
    classify("Mozilla/5.0 (X11; Linux x86_64) linkflow-warm-up")
    classify.cache_clear()
