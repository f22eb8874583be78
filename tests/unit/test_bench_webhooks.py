"""``linkflow bench --webhooks``'s own logic, without a server: the
receiver's count, what the bench reads of it, and of the webhooks
service's /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from shared.bench import receiver
from shared.bench.receiver import Seen, Tally, decode_tally
from shared.bench.webhooks import pending, spread


def test_the_receiver_counts_distinct_ids_and_times_first_to_last() -> None:
    seen = Seen()
    for webhook_id, at in [("a", 10.0), ("b", 10.5), ("a", 11.0), ("c", 12.0), (None, 13.0)]:
        seen.take(webhook_id, at)
    tally = decode_tally(msgspec.json.encode(seen.tally()))
    assert tally == Tally(requests=5, distinct=3, first=10.0, last=12.0, gap=1.5)
    assert tally.duplicates == 2  # "a" again, and a request without an id
    assert tally.seconds == 2.0
    assert tally.rate == 1.0  # three arrivals, two intervals, two seconds
    assert tally.rate_but_gap == 4.0  # less the 1.5 s from "b" to "c"


@pytest.mark.parametrize("seen", [[], [("a", 1.0)], [("a", 1.0), ("b", 1.0)]])
def test_no_rate_from_fewer_than_two_arrivals_or_no_time(seen: list[tuple[str, float]]) -> None:
    count = Seen()
    for webhook_id, at in seen:
        count.take(webhook_id, at)
    assert count.tally().rate == 0.0


def _call(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(receiver.app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_the_receiver_app_answers_204_and_tallies() -> None:
    assert _call("POST", "/reset", []) == (204, b"")
    assert _call("POST", "/hook", [(b"webhook-id", b"msg_1")]) == (204, b"")
    assert _call("POST", "/hook", [(b"webhook-id", b"msg_1")]) == (204, b"")
    status, body = _call("GET", "/tally", [])
    assert status == 200
    tally = decode_tally(body)
    assert (tally.requests, tally.distinct) == (2, 1)
    assert _call("POST", "/reset", [])[0] == 204
    assert decode_tally(_call("GET", "/tally", [])[1]) == Tally()
    assert _call("GET", "/elsewhere", [])[0] == 404


def test_pending_sums_every_endpoint() -> None:
    metrics = (
        "# HELP linkflow_webhook_pending Deliveries waiting for an attempt, per endpoint\n"
        "# TYPE linkflow_webhook_pending gauge\n"
        'linkflow_webhook_pending{endpoint="ep_1"} 12\n'
        'linkflow_webhook_pending{endpoint="ep_2"} 3\n'
        "linkflow_webhook_oldest_pending_seconds 4.5\n"
    )
    assert pending(metrics) == 15
    assert pending("linkflow_webhook_oldest_pending_seconds 0\n") == 0


def test_spread() -> None:
    assert spread([0.9, 0.7, 0.8]) == "median 0.80 (min 0.70, max 0.90)"
    assert spread([1200.0, 950.0], ",.0f") == "median 1,075 (min 950, max 1,200)"
