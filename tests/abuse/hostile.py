"""A stranger's requests, sent from a process of their own (so that their
sending costs the server under test nothing but what the server does with
them): ``python -m tests.abuse.hostile HOST PORT PATH COUNT HEADER SIZE
[CONNECTIONS]`` sends COUNT ``GET PATH`` requests, each with header HEADER
holding SIZE bytes that differ from request to request (and ``{i}`` in
PATH replaced by the request's number: a path of its own), over CONNECTIONS
connections, and prints one JSON line: how many answers of each status, and
how many connections the server closed or reset instead."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter


async def _one(host: str, port: int, request: bytes, seen: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        seen["refused"] += 1
        return
    try:
        writer.write(request)
        await writer.drain()
        line = await reader.readline()
        seen[line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed"] += 1
    except (ConnectionError, OSError):
        seen["reset"] += 1
    finally:
        writer.close()


async def main(
    host: str, port: int, path: str, count: int, header: str, size: int, conns: int
) -> None:
    seen: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            # Distinct per request: every cache keyed by it sees a new key.
            tag = f"Mozilla/5.0 (Windows NT 10.0) hostile/{i} ".encode()
            value = (tag + b"x" * size)[:size] if size > len(tag) else tag
            request = (
                f"GET {path.replace('{i}', str(i))} HTTP/1.1\r\n"
                f"host: {host}\r\nconnection: close\r\n".encode()
                + header.encode()
                + b": "
                + value
                + b"\r\n\r\n"
            )
            await _one(host, port, request, seen)

    await asyncio.gather(*(sender() for _ in range(conns)))
    print(json.dumps(dict(seen)), flush=True)


if __name__ == "__main__":
    host, port, path, count, header, size, *rest = sys.argv[1:]
    asyncio.run(
        main(host, int(port), path, int(count), header, int(size), int(rest[0]) if rest else 4)
    )
