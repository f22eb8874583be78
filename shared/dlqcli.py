"""``linkflow dlq list|replay|discard``: the DLQ endpoints on the command line."""

from __future__ import annotations

import argparse
import asyncio
import os

import msgspec

from shared import bus, dlqstore
from shared.contracts import HDR_ATTEMPTS, HDR_ERROR, HDR_ORIGINAL_SUBJECT
from shared.settings import Common, load


def add_parser(dlq: argparse.ArgumentParser) -> None:
    """The verbs of ``linkflow dlq``."""
    dlq.set_defaults(func=run)
    verbs = dlq.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("list", help="the oldest dead letters")
    ls.add_argument("--consumer")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="print JSON")
    replay = verbs.add_parser("replay", help="publish to the original subject again")
    replay.add_argument("seq", type=int, nargs="?")
    replay.add_argument("--all", action="store_true", help="every dead letter (of --consumer)")
    replay.add_argument("--consumer")
    discard = verbs.add_parser("discard", help="delete a dead letter")
    discard.add_argument("seq", type=int)


async def _run(args: argparse.Namespace) -> int:
    common = load(Common, environ=os.environ)
    nc = await bus.connect(common.nats_url, "linkflow-dlq", creds=common.nats_creds, forever=False)
    js = nc.jetstream()
    try:
        if args.verb == "list":
            letters = await dlqstore.list_(js, args.consumer, args.limit)
            if args.json:
                print(msgspec.json.encode([x.as_json() for x in letters]).decode())
            elif not letters:
                print("no dead letters")
            for x in [] if args.json else letters:
                print(
                    f"{x.seq:>8}  {x.consumer:<16} {x.headers.get(HDR_ORIGINAL_SUBJECT, '?'):<24}"
                    f" attempts={x.headers.get(HDR_ATTEMPTS, '?')}  "
                    f"{x.headers.get(HDR_ERROR, '')}"
                )
            return 0
        if args.verb == "replay":
            if args.all:
                print(f"replayed {await dlqstore.replay_all(js, args.consumer)}")
                return 0
            if args.seq is None:
                print("linkflow dlq replay: give a sequence or --all")
                return 2
            print(f"replayed {args.seq} as stream seq {await dlqstore.replay(js, args.seq)}")
            return 0
        await dlqstore.discard(js, args.seq)
        print(f"discarded {args.seq}")
        return 0
    except dlqstore.NotInDlq as exc:
        print(f"linkflow dlq: {exc}")
        return 1
    finally:
        await nc.drain()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
