"""One log format for every service, so interleaved output (``linkflow up``) reads."""

from __future__ import annotations

import logging

from shared.settings import Common


def configure(service: str, common: Common) -> None:
    """Logging for ``service``, and the warnings every service gives at start."""
    logging.basicConfig(
        level=common.log_level, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"
    )
    if not common.auth:
        logging.getLogger(service).warning(
            "LINKFLOW_AUTH=off: API keys are not checked; anyone who reaches this service "
            "may call every /api route"
        )
