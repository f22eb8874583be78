"""The ``linkflow`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from shared import dlqcli, keyscli
from shared.errors import CommandError
from shared.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linkflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on this machine")
    up.add_argument(
        "--home",
        type=Path,
        default=Path(".linkflow"),
        help="where embedded servers keep their data (default .linkflow/)",
    )
    sub.add_parser("migrate", help="create tables, streams, consumers and the KV bucket")
    sub.add_parser("schemas", help="regenerate shared/schemas and shared/asyncapi.yaml")
    bench = sub.add_parser("bench", help="measure redirects and the click-recorder")
    bench.add_argument("--duration", type=int, default=5, help="seconds per load run")
    bench.add_argument(
        "--rounds", type=int, default=4, help="baseline/linkflow load runs, alternated"
    )
    bench.add_argument("--connections", type=int, default=50)
    bench.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the OS place every process (default: the server under test gets a CPU "
        "of its own, wrk and nats-server the others)",
    )
    bench.add_argument(
        "--clicks", type=int, default=100_000, help="clicks queued for the drain measurement"
    )
    dlqcli.add_parser(sub)
    keyscli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LINKFLOW_LOG_LEVEL", "WARNING"))
    admin_url = Path(".linkflow/nats-admin.url")
    if args.command in ("keys", "dlq") and "LINKFLOW_NATS_URL" not in os.environ:
        # Beside a `linkflow up`, its embedded server's admin identity.
        with contextlib.suppress(OSError):
            os.environ["LINKFLOW_NATS_URL"] = admin_url.read_text().strip()
    try:
        return _run(args)
    except (CommandError, SettingsError) as exc:
        print(f"linkflow {args.command}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        from shared.supervisor import up as run_up

        args.home.mkdir(parents=True, exist_ok=True)
        return run_up(args.home.resolve())
    if args.command == "migrate":
        from shared.migrate import migrate_all

        asyncio.run(migrate_all(os.environ))
        print("linkflow: migrated")
        return 0
    if args.command == "schemas":
        from shared.schema import write_all

        for path in write_all():
            print(f"wrote {path}")
        return 0
    if args.command == "keys":
        return keyscli.run(args)
    if args.command == "dlq":
        return dlqcli.run(args)
    if args.command == "bench":
        from shared.bench import run as run_bench

        return run_bench(args.duration, args.connections, args.clicks, args.rounds, args.pin)
    return 2


if __name__ == "__main__":
    sys.exit(main())
