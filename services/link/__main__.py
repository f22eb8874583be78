"""``python -m services.link``: the gateway on ``LINKFLOW_LINK_PORT`` (8080)."""

from __future__ import annotations

import logging

import uvicorn

from services.link.app import build
from services.link.settings import Settings
from shared.settings import load


def main() -> None:
    settings = load(Settings, "link")
    logging.basicConfig(level=settings.common.log_level,
                        format="%(asctime)s link %(levelname)s %(name)s: %(message)s")
    # uvloop + httptools and no access log: the redirect is the hot path.
    uvicorn.run(build(settings), host=settings.host, port=settings.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning",
                timeout_graceful_shutdown=10, lifespan="on")


if __name__ == "__main__":
    main()
