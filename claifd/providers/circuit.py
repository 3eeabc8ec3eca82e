"""A provider's circuit breaker: a dead provider costs one fast failure, not
a retry ladder per request.

    closed    -> calls pass; `circuit_failures` failures in a row (no answer:
                 connection refused or dropped, 5xx, timeout) open it
    open      -> calls fail at once (CircuitOpen) for `circuit_cooldown` s
    half-open -> one probe call passes: its success closes the circuit, its
                 failure opens it again

A 429 or another 4xx is an answer, not a dead provider: it never counts (a
rate limit rests the key instead, keys.py). A change to the provider's
configuration builds a new, closed circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Circuit"]


class Circuit:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.opened = 0  # times it opened
        self._probing = False

    def __repr__(self) -> str:
        return f"<Circuit {self.state} failures={self.failures}>"

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the one probe may."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.clock() - self.opened_at < self.cooldown:
                return False
            self.state = "half-open"
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def retry_in(self) -> float:
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def succeeded(self) -> None:
        self.state = "closed"
        self.failures = 0
        self._probing = False

    def failed(self) -> None:
        """A call that got no answer from the provider."""
        self.failures += 1
        if self.state == "half-open" or (self.state == "closed" and self.failures >= self.threshold):
            self.state = "open"
            self.opened_at = self.clock()
            self.opened += 1
            self._probing = False

    def released(self) -> None:
        """A probe that ended without a verdict (cancelled, a 4xx): the next call may probe."""
        self._probing = False

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "failures": self.failures, "opened": self.opened}
        if self.state != "closed":
            out["retry_in_s"] = round(self.retry_in(), 3)
        return out
