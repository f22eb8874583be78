"""``python -m services.click_recorder``: drain ``CLICKS`` into PostgreSQL,
and serve the raw clicks' export on ``LINKFLOW_CLICK_RECORDER_PORT``."""

from __future__ import annotations

from services.click_recorder.app import build
from services.click_recorder.settings import Settings
from shared import logs, roster
from shared.runner import run_service, serve
from shared.settings import load_or_exit


def main() -> None:
    settings = load_or_exit(Settings, roster.CLICK_RECORDER.name)
    logs.configure(roster.CLICK_RECORDER.label, settings.common)
    run_service(serve(build(settings), settings.host, settings.port))


if __name__ == "__main__":
    main()
