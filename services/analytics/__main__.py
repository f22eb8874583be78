"""``python -m services.analytics``: analytics API and consumer on ``LINKFLOW_ANALYTICS_PORT``."""

from __future__ import annotations

import uvloop

from services.analytics.app import build
from services.analytics.settings import Settings
from shared import logs
from shared.serve import serve
from shared.settings import load


def main() -> None:
    settings = load(Settings, "analytics")
    logs.configure("analytics", settings.common.log_level)
    uvloop.run(serve(build(settings), settings.host, settings.port))


if __name__ == "__main__":
    main()
