"""The gateway's on-disk spool: where clicks go while NATS is unreachable.

A redirect is answered only once its click is safe. Normally that means a
JetStream PubAck; while NATS is down or a publish times out it means a
record in this spool, written and ``fdatasync``-ed before the visitor gets
the 3xx. Records of one moment share one write and one sync (group commit,
in a thread so the event loop keeps serving), which costs about one disk
flush per group instead of per click, and survives a crash of the process
and of the machine. When NATS is back the spool is replayed in order with
the original click ids (``Nats-Msg-Id``), and a segment file is deleted only
after JetStream acknowledged every record in it.

Layout: ``NNNNNNNN.log`` segments of JSON lines ``[code, headers, payload]``
and, per segment being replayed, ``NNNNNNNN.done`` with the byte offset
replayed so far (written without sync: after a crash a few records are
replayed twice, which the duplicate window and the idempotent consumers
absorb).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from shared import metrics
from shared.contracts import HDR_MSG_ID

Record = tuple[str, bytes, bytes]  # code, header block, payload
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(tuple[str, str, str]).decode


class SpoolFull(Exception):
    pass


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.lock = asyncio.Lock()
        self._fd = -1
        self._segment = 0
        self._bytes = 0
        self._records = 0
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Start a fresh segment; older ones (a previous run's) await replay."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        for path in existing:
            size = path.stat().st_size - _offset(path)
            self._bytes += size
            with path.open("rb") as f:
                f.seek(_offset(path))
                self._records += sum(1 for _ in f)
        self._segment = int(existing[-1].stem) + 1 if existing else 1
        self._open_segment()
        self._report()

    def _open_segment(self) -> None:
        path = self.directory / f"{self._segment:08d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.log"))

    @property
    def records(self) -> int:
        return self._records

    async def append(self, record: Record) -> None:
        """Return once the record is on disk; SpoolFull if there is no room."""
        code, headers, payload = record
        line = _encode((code, headers.decode("latin-1"), payload.decode())) + b"\n"
        if self._bytes + len(line) > self.max_bytes:
            metrics.SPOOL_FULL.inc()
            raise SpoolFull(f"spool holds {self._bytes} bytes (limit {self.max_bytes})")
        self._bytes += len(line)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(line for line, _ in batch)
            try:
                async with self.lock:
                    await asyncio.to_thread(_write_and_sync, self._fd, data)
            except Exception as exc:
                self._bytes -= len(data)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._records += len(batch)
            self._report()
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def seal(self) -> list[Path]:
        """Switch new records to a new segment; return the ones to replay.
        Call with ``lock`` held, so no write is in flight."""
        current = self.directory / f"{self._segment:08d}.log"
        if current.stat().st_size:
            os.close(self._fd)
            self._segment += 1
            self._open_segment()
        return [p for p in self.segments() if int(p.stem) < self._segment]

    def replayed(self, segment: Path, offset: int, records: int, nbytes: int) -> None:
        _done_path(segment).write_text(str(offset))
        self._records -= records
        self._bytes -= nbytes
        metrics.SPOOL_REPLAYED.inc(records)
        self._report()

    def finished(self, segment: Path) -> None:
        segment.unlink(missing_ok=True)
        _done_path(segment).unlink(missing_ok=True)

    def _report(self) -> None:
        metrics.SPOOL_RECORDS.set(self._records)
        metrics.SPOOL_BYTES.set(self._bytes)

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        # An empty current segment is not worth keeping.
        current = self.directory / f"{self._segment:08d}.log"
        if current.exists() and not current.stat().st_size:
            current.unlink()


def read(segment: Path, chunk: int) -> Iterator[tuple[list[Record], int, int]]:
    """Chunks of records from the segment's replay offset on, each with the
    offset after it and its size in bytes."""
    offset = _offset(segment)
    with segment.open("rb") as f:
        f.seek(offset)
        records: list[Record] = []
        size = 0
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn last line of a crash: its visitor never got an answer
            code, headers, payload = _decode(line)
            records.append((code, headers.encode("latin-1"), payload.encode()))
            size += len(line)
            if len(records) == chunk:
                offset += size
                yield records, offset, size
                records, size = [], 0
        if records:
            yield records, offset + size, size


def _done_path(segment: Path) -> Path:
    return segment.with_suffix(".done")


def _offset(segment: Path) -> int:
    try:
        return int(_done_path(segment).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_and_sync(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fdatasync(fd)


async def append_rate(directory: Path, n: int, concurrency: int) -> float:
    """Clicks/s into a spool from ``concurrency`` writers, each append written
    and fdatasync-ed as during a NATS outage (``linkflow bench`` reads this
    through the ``linkflow.bench`` entry point)."""
    spool = Spool(directory, 1 << 30)
    spool.open()
    record = ("bench", f"NATS/1.0\r\n{HDR_MSG_ID}: x\r\n\r\n".encode(), b'{"id":"x"}' * 20)
    done = 0

    async def writer() -> None:
        nonlocal done
        while done < n:
            done += 1
            await spool.append(record)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    await spool.close()
    return rate
