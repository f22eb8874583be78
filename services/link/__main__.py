"""``python -m services.link``: the gateway on ``LINKFLOW_LINK_PORT`` (8080)."""

from __future__ import annotations

from services.link.app import build
from services.link.settings import Settings
from shared import logs, roster
from shared.runner import run_service, serve
from shared.settings import load_or_exit


def main() -> None:
    settings = load_or_exit(Settings, roster.LINK.name)
    logs.configure(roster.LINK.label, settings.common)
    run_service(serve(build(settings), settings.host, settings.port))


if __name__ == "__main__":
    main()
