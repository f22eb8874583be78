"""Which CPUs the bench's processes run on while it compares redirects.

The bench runs the load generator on the same machine as the servers it
loads. Left to the scheduler, wrk, nats-server and the server under test
share both cores of a 2-core machine as it sees fit: now and then it puts
nats-server's or wrk's wake-ups on the server's core, and the server loses
its turn and its caches. The bare app is one busy process and rarely meets
this; the gateway, woken by its PubAcks, meets it often, so its runs vary
far more than the baseline's.

So, as benchmarks on one machine usually do, the server under test (the bare
app or the gateway) gets a core to itself, and everything else (wrk, the
bench, nats-server) shares the rest. It is the nearest a single machine comes
to load from elsewhere. For linkflow it is not the kindest arrangement: its
nats-server shares a core with the load generator, where in production it
would not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Placement:
    server: frozenset[int]  # the server under test
    rest: frozenset[int]  # the load generator, the bench and nats-server

    def describe(self) -> str:
        return (
            f"server under test on CPU {_cpus(self.server)}; wrk, nats-server and the bench "
            f"on CPU {_cpus(self.rest)}"
        )


def split() -> Placement | None:
    """The first CPU this process may use for the server, the others for the
    rest; None where CPUs cannot be chosen or there is only one."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return Placement(frozenset(cpus[:1]), frozenset(cpus[1:]))


def allowed() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0))


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Move every thread of ``pid`` to ``cpus``; threads it starts later
    inherit them. (A thread that ends meanwhile needs nothing.)"""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:
            continue


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
