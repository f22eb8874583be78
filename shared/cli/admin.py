"""``linkflow dlq`` and ``linkflow keys``: operating a running linkflow over
NATS with the admin identity (the DLQ endpoints and API keys on the command
line)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from shared.contracts import HDR_ATTEMPTS, HDR_ERROR, HDR_ORIGINAL_SUBJECT, now, rfc3339
from shared.errors import CommandError
from shared.http import keys
from shared.jetstream import bus, dlq
from shared.settings import Common, SettingsError, load, parse_duration
from shared.urls import host_name

# Written by ``linkflow up`` beside its data: the embedded server's admin URL.
ADMIN_URL = Path(".linkflow/nats-admin.url")


def _settings() -> Common:
    environ = dict(os.environ)
    if "LINKFLOW_NATS_URL" not in environ:
        # Beside a `linkflow up`, its embedded server's admin identity.
        with contextlib.suppress(OSError):
            environ["LINKFLOW_NATS_URL"] = ADMIN_URL.read_text().strip()
    return load(Common, environ=environ)


async def _connect(common: Common, name: str) -> Client:
    return await bus.connect(common.nats_url, name, creds=common.nats_creds, forever=False)


def _sync(
    command: Callable[[argparse.Namespace, Common], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    return lambda args: asyncio.run(command(args, _settings()))


def add_dlq(cmd: argparse.ArgumentParser) -> None:
    """The verbs of ``linkflow dlq``."""
    cmd.set_defaults(func=_sync(_dlq))
    verbs = cmd.add_subparsers(dest="verb", required=True)
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


async def _dlq(args: argparse.Namespace, common: Common) -> int:
    nc = await _connect(common, "linkflow-dlq")
    js = nc.jetstream()
    try:
        if args.verb == "list":
            letters = await dlq.list_(js, args.consumer, args.limit)
            if args.json:
                print(msgspec.json.encode([x.as_letter() for x in letters]).decode())
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
                done = await dlq.replay_all(js, args.consumer)
                left = f", left {done.skipped} that cannot be replayed" if done.skipped else ""
                print(f"replayed {done.replayed}{left}")
                return 0
            if args.seq is None:
                print("linkflow dlq replay: give a sequence or --all")
                return 2
            new_seq = await dlq.replay(js, args.seq)
            how = "by the cache-refresher" if new_seq is None else f"as stream seq {new_seq}"
            print(f"replayed {args.seq} {how}")
            return 0
        await dlq.discard(js, args.seq)
        print(f"discarded {args.seq}")
        return 0
    except (dlq.NotInDlq, dlq.NotReplayable, dlq.ReplayFailed) as exc:
        print(f"linkflow dlq: {exc}")
        return 1
    finally:
        await nc.drain()


def add_keys(cmd: argparse.ArgumentParser) -> None:
    """The verbs of ``linkflow keys``."""
    cmd.set_defaults(func=_sync(_keys))
    verbs = cmd.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="mint a key; it is printed once, on the last line")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        action="append",
        choices=keys.SCOPES,
        help="a scope the key grants (repeatable; default admin)",
    )
    create.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: never)")
    create.add_argument(
        "--domain",
        action="append",
        metavar="HOST",
        help="the only short domain whose links and stats the key sees (repeatable; "
        "default: every domain)",
    )
    verbs.add_parser("list", help="every key's name, prefix, scopes, use and expiry")
    revoke = verbs.add_parser("revoke", help="revoke a key on every service within 2 s")
    revoke.add_argument("name")


def _when(t: datetime | None) -> str:
    return rfc3339(t)[:19].replace("T", " ") if t else "-"


async def _keys(args: argparse.Namespace, common: Common) -> int:
    expires = None
    if args.verb == "create" and args.expires:
        try:
            expires = now() + timedelta(seconds=parse_duration(args.expires))
        except SettingsError as exc:
            raise CommandError(f"--expires: {exc}") from None
    nc = await _connect(common, "linkflow-keys")
    js = nc.jetstream()
    try:
        if args.verb == "create":
            scopes = tuple(args.scope or [keys.ADMIN])
            try:
                domains = tuple(dict.fromkeys(host_name(d) for d in args.domain or ()))
            except ValueError as exc:
                raise CommandError(f"a domain {exc}: {args.domain}") from None
            key = await keys.create(js, args.name, scopes, expires, domains)
            only = f", domains {', '.join(domains)}" if domains else ""
            print(f"key {args.name!r}: scopes {', '.join(scopes)}{only}, expires {_when(expires)}")
            print("it is shown this once; keep it now:")
            print(key)
        elif args.verb == "list":
            print(
                f"{'name':<20} {'prefix':<10} {'scopes':<24} {'created':<20} "
                f"{'last used':<20} {'expires':<20} {'state':<8} domains"
            )
            for record, used in await keys.list_(js):
                state = (
                    "revoked"
                    if record.revoked_at
                    else ("expired" if record.expired(now()) else "active")
                )
                print(
                    f"{record.name:<20} {record.prefix:<10} {','.join(record.scopes):<24} "
                    f"{_when(record.created_at):<20} {_when(used):<20} "
                    f"{_when(record.expires_at):<20} {state:<8} {','.join(record.domains) or '*'}"
                )
        else:
            await keys.revoke(js, args.name)
            print(f"revoked {args.name!r}")
        return 0
    except (keys.KeyExists, keys.NoSuchKey, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await nc.drain()
