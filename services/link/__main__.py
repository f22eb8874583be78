"""``python -m services.link``: the gateway on ``LINKFLOW_LINK_PORT`` (8080)."""

from __future__ import annotations

import uvloop

from services.link.app import build
from services.link.settings import Settings
from shared import logs
from shared.serve import serve
from shared.settings import load


def main() -> None:
    settings = load(Settings, "link")
    logs.configure("link", settings.common.log_level)
    uvloop.run(serve(build(settings), settings.host, settings.port))


if __name__ == "__main__":
    main()
