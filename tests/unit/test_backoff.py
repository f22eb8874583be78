"""The one backoff rule: worker naks, the gateway's reconnects and `linkflow up`'s restarts."""

from __future__ import annotations

from services.link.wire import RECONNECT
from shared.backoff import Backoff
from shared.cli.supervisor import RESTART
from shared.settings import WorkerSettings


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, factor=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 10.0, 10.0]


def test_a_factor_below_one_never_shrinks_the_wait() -> None:
    assert Backoff(initial=2.0, cap=5.0, factor=0.5).delay(4) == 2.0


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert Backoff(initial=1.0, cap=60.0).delay(10_000) == 60.0


def test_every_user_reads_the_same_rule() -> None:
    worker = WorkerSettings(min_retry_delay=0.5, max_retry_delay=4.0, retry_delay_factor=2.0)
    assert [worker.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [RESTART.delay(n) for n in (1, 2, 6, 7)] == [1.0, 2.0, 30.0, 30.0]
    assert [RECONNECT.delay(n) for n in (1, 2, 5, 6)] == [0.1, 0.2, 1.6, 2.0]
