"""``python -m services.analytics``: analytics API and consumer on ``LINKFLOW_ANALYTICS_PORT``."""

from __future__ import annotations

from services.analytics.app import build
from services.analytics.settings import Settings
from shared import logs, roster
from shared.runner import run_service, serve
from shared.settings import load_or_exit


def main() -> None:
    settings = load_or_exit(Settings, roster.ANALYTICS.name)
    logs.configure(roster.ANALYTICS.label, settings.common)
    run_service(serve(build(settings), settings.host, settings.port))


if __name__ == "__main__":
    main()
