"""The ``linkflow`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from shared import roster
from shared.cli import admin
from shared.errors import CommandError
from shared.jetstream.bus import Unreachable
from shared.settings import CommandSettings, SettingsError, load


def _up(args: argparse.Namespace) -> int:
    from shared.cli.supervisor import up

    args.home.mkdir(parents=True, exist_ok=True)
    return up(args.home.resolve())


def _migrate(_: argparse.Namespace) -> int:
    from shared.cli.migrate import migrate_all

    asyncio.run(migrate_all(os.environ))
    print("linkflow: migrated")
    return 0


def _schemas(_: argparse.Namespace) -> int:
    from shared.cli.generate import write_all

    for path in write_all():
        print(f"wrote {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    # The benchmark lab is a package of its own (shared/bench/), loaded only here.
    if args.inserts:
        from shared.bench.inserts import run_inserts

        return run_inserts(args.rows, args.clicks, args.rounds, args.data)
    if args.webhooks:
        from shared.bench.webhooks import run_webhooks

        return run_webhooks(args.duration, args.connections, args.rounds, args.deliveries)
    if args.system:
        from shared.bench.system import run_system

        return run_system(args.duration, args.connections, args.step, args.sustained)
    from shared.bench.redirects import run

    return run(args.duration, args.connections, args.clicks, args.rounds, args.pin, args.domains)


def _probe(args: argparse.Namespace) -> int:
    from shared.cli.probe import probe

    return probe(args.service)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="linkflow", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on this machine")
    up.add_argument(
        "--home",
        type=Path,
        default=Path(".linkflow"),
        help="where embedded servers keep their data (default .linkflow/)",
    )
    up.set_defaults(func=_up)
    sub.add_parser(
        "migrate", help="create tables, streams, consumers and the KV buckets"
    ).set_defaults(func=_migrate)
    sub.add_parser(
        "schemas", help="regenerate shared/schemas, shared/asyncapi.yaml and deploy/nats.conf"
    ).set_defaults(func=_schemas)
    bench = sub.add_parser(
        "bench",
        help="measure redirects and the click-recorder (shared/bench/; needs wrk on PATH)",
    )
    bench.add_argument("--duration", type=int, default=5, help="seconds per load run")
    bench.add_argument(
        "--rounds", type=int, default=4, help="baseline/linkflow load runs, alternated"
    )
    bench.add_argument("--connections", type=int, default=50)
    bench.add_argument(
        "--domains",
        type=int,
        choices=(1, 2),
        default=2,
        help="short domains in the gateways' map: the default alone, or a second too "
        "(the redirect then reads Host; default 2)",
    )
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
    bench.add_argument(
        "--system",
        action="store_true",
        help="everything as `linkflow up` runs it: a spike, the catch-up after it, CPU per "
        "click per process, and the sustained rate (use --duration 10 or more)",
    )
    bench.add_argument(
        "--step", type=int, default=30, help="seconds per sustained-rate step (--system)"
    )
    bench.add_argument(
        "--no-sustained",
        dest="sustained",
        action="store_false",
        help="skip the sustained-rate search (--system)",
    )
    bench.add_argument(
        "--webhooks",
        action="store_true",
        help="everything as `linkflow up` runs it: deliveries/s to a local receiver from one "
        "endpoint on link.clicked, and the spike ratio with that endpoint against none "
        "(--rounds rounds, alternated)",
    )
    bench.add_argument(
        "--deliveries",
        type=int,
        default=20_000,
        help="clicks driven in one second for the deliveries/s measurement (--webhooks)",
    )
    bench.add_argument(
        "--inserts",
        action="store_true",
        help="the recorder's insert rate into a clicks table holding --rows generated clicks, "
        "against an empty one (--clicks per round, --rounds rounds)",
    )
    bench.add_argument(
        "--rows", type=int, default=50_000_000, help="clicks in the full table (--inserts)"
    )
    bench.add_argument(
        "--data",
        type=Path,
        help="keep the filled PostgreSQL here and reuse it next time (--inserts)",
    )
    bench.set_defaults(func=_bench)
    probe = sub.add_parser("probe", help="exit 0 if a service on this host answers /healthz")
    probe.add_argument("service", nargs="?", choices=[s.name for s in roster.ALL])
    probe.set_defaults(func=_probe)
    admin.add_dlq(sub.add_parser("dlq", help="list, replay or discard dead letters"))
    admin.add_keys(sub.add_parser("keys", help="create, list or revoke API keys"))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=load(CommandSettings).log_level)
    try:
        code: int = args.func(args)
        return code
    except (CommandError, SettingsError, Unreachable) as exc:
        print(f"linkflow {args.command}: {exc}", file=sys.stderr)
        return 1
