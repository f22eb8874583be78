"""The abuse suite: what a stranger, a weak key or a stolen service identity
can cost, tried against real servers and shown bounded.

The in-process services are the integration suite's own fixtures."""

from tests.integration.conftest import (
    admin_key,
    analytics,
    cache_refresher,
    gateway,
    recorder,
    recorder_api,
)

__all__ = ["admin_key", "analytics", "cache_refresher", "gateway", "recorder", "recorder_api"]
