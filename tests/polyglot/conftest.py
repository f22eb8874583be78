"""The polyglot suite: linkflow's published contracts read as another language
would (Node with the packages of package.json, clients generated from the
served OpenAPI documents).

The in-process services are the integration suite's own fixtures."""

from tests.integration.conftest import admin_key, analytics, cache_refresher, gateway, recorder

__all__ = ["admin_key", "analytics", "cache_refresher", "gateway", "recorder"]
