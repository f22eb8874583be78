"""Exponential backoff: the one rule for how long to wait before trying again.

The worker loop's nak delays, the gateway's reconnects to NATS and
``linkflow up``'s restarts of a service that died all grow the same way:
``initial * factor ** (failures - 1)``, never above ``cap``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float
    cap: float
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row (the first waits ``initial``)."""
        # A factor below 1 would shrink the wait as failures pile up.
        exponent = max(failures - 1, 0)
        try:
            grown = self.initial * max(self.factor, 1.0) ** exponent
        except OverflowError:
            return self.cap
        return min(grown, self.cap)
