"""The batch handler: one INSERT per batch, duplicates absorbed by the primary key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import asyncpg

from shared.contracts import Click
from shared.db import UNAVAILABLE
from shared.worker import Delivery, Unavailable

# unnest() turns one array per column into rows: a 500-click batch is one
# statement and one round trip. A redelivered click hits ON CONFLICT.
INSERT: Final = """
INSERT INTO clicks (id, code, ts, referrer, user_agent, ip, country, is_bot, request_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::boolean[], $9::text[])
ON CONFLICT (id) DO NOTHING
"""


class ClickRecorder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        clicks = [d.payload for d in batch]
        columns = (
            [c.id for c in clicks],
            [c.code for c in clicks],
            [c.ts for c in clicks],
            [c.referrer for c in clicks],
            [c.user_agent for c in clicks],
            [c.ip for c in clicks],
            [c.country for c in clicks],
            [c.is_bot for c in clicks],
            [c.request_id for c in clicks],
        )
        try:
            await self._pool.execute(INSERT, *columns)
        except UNAVAILABLE as exc:
            raise Unavailable(f"database unavailable: {exc!r}") from exc
        return {}
