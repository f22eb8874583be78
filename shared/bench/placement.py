"""Which CPUs the bench's processes run on while it compares redirects.

The bench runs its load generator on the machine it measures. Left to the
scheduler, three busy processes (wrk, nats-server and the gateway) share the
two cores of a 2-core machine, and the scheduler now and then runs
nats-server or wrk on the gateway's core: under load the gateway was
preempted some 3,000 times a second and used 91-92 % of its core. The bare
app, with only wrk beside it, meets this far less (about 350 times a
second). So the gateway's runs varied much more than the baseline's, and the
ratio with them.

As benchmarks on one machine usually do, the server under test (the bare
app or the gateway) gets a core to itself, and everything else (wrk, the
bench, nats-server) shares the rest: the gateway was then preempted some 40
times a second and used 94-97 % of its core. It is the nearest a single
machine comes to load from elsewhere. It is not the kindest arrangement for
linkflow: its nats-server shares a core with the load generator, where in
production it would not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Placement:
    server: frozenset[int]  # the server under test
    rest: frozenset[int]  # the load generator, the bench and nats-server

    @property
    def everywhere(self) -> frozenset[int]:
        """Every CPU the bench started with, for putting processes back."""
        return self.server | self.rest

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


def pin(cpus: frozenset[int], *pids: int) -> None:
    """Move every thread of each of ``pids`` to ``cpus``; threads they start
    later inherit them. (A thread that ends meanwhile needs nothing.)"""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except ProcessLookupError:
                continue


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
