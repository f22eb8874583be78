"""One log format for every service, so interleaved output (``linkflow up``) reads."""

from __future__ import annotations

import logging


def configure(service: str, level: str) -> None:
    logging.basicConfig(
        level=level, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"
    )
