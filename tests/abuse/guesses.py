"""Wrong passwords from a process of their own (so that sending them costs
the server under test nothing but what it does with them): ``python -m
tests.abuse.guesses HOST PORT COUNT PATH...`` sends COUNT ``POST`` requests
at once, each of a wrong password, to the PATHs in turn, and prints one
JSON line: how many answers of each status."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from tests.abuse.hostile import _one


def _guess(host: str, path: str, i: int) -> bytes:
    body = f"password=wrong-guess-{i:06d}".encode()
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n"
        "content-type: application/x-www-form-urlencoded\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def main(host: str, port: int, count: int, paths: list[str]) -> None:
    seen: Counter[str] = Counter()
    await asyncio.gather(
        *(_one(host, port, _guess(host, paths[i % len(paths)], i), seen) for i in range(count))
    )
    print(json.dumps(dict(seen)), flush=True)


if __name__ == "__main__":
    host, port, count, *paths = sys.argv[1:]
    asyncio.run(main(host, int(port), int(count), paths))
