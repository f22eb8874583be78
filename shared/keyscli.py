"""``linkflow keys create|list|revoke``: API keys on the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import datetime, timedelta

from shared import bus, keys
from shared.contracts import now, rfc3339
from shared.errors import CommandError
from shared.settings import Common, SettingsError, load, parse_duration


def add_parser(cmd: argparse.ArgumentParser) -> None:
    """The verbs of ``linkflow keys``."""
    cmd.set_defaults(func=run)
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
    verbs.add_parser("list", help="every key's name, prefix, scopes, use and expiry")
    revoke = verbs.add_parser("revoke", help="revoke a key on every service within 2 s")
    revoke.add_argument("name")


def _when(t: datetime | None) -> str:
    return rfc3339(t)[:19].replace("T", " ") if t else "-"


async def _run(args: argparse.Namespace) -> int:
    common = load(Common, environ=os.environ)
    expires = None
    if args.verb == "create" and args.expires:
        try:
            expires = now() + timedelta(seconds=parse_duration(args.expires))
        except SettingsError as exc:
            raise CommandError(f"--expires: {exc}") from None
    nc = await bus.connect(common.nats_url, "linkflow-keys", creds=common.nats_creds, forever=False)
    js = nc.jetstream()
    try:
        if args.verb == "create":
            scopes = tuple(args.scope or [keys.ADMIN])
            key = await keys.create(js, args.name, scopes, expires)
            print(f"key {args.name!r}: scopes {', '.join(scopes)}, expires {_when(expires)}")
            print("it is shown this once; keep it now:")
            print(key)
        elif args.verb == "list":
            print(
                f"{'name':<20} {'prefix':<10} {'scopes':<24} {'created':<20} "
                f"{'last used':<20} {'expires':<20} state"
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
                    f"{_when(record.expires_at):<20} {state}"
                )
        else:
            await keys.revoke(js, args.name)
            print(f"revoked {args.name!r}")
        return 0
    except (keys.KeyExists, keys.NoSuchKey, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await nc.drain()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
