"""When to retry an upstream call and how long to wait (sans-IO).

Policy, after the official SDKs: retry connection failures and the statuses
that mean "try again" (408, 409, 429, 500, 502, 503, 504, 529), or whatever
the provider marks with `x-should-retry`. Wait what the provider asks
(`retry-after-ms`, then `retry-after` in seconds or as an HTTP date), else
exponential backoff with full jitter (a uniform draw in [0, min(cap, base *
2**n)], which spreads a crowd of clients best). Stop after `max_attempts`
or when the next wait would pass the total deadline.

The random source and the clock are injected, so tests need no sleeps.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["RETRY_STATUSES", "RetryPolicy", "retry_after_seconds", "should_retry_status"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    deadline: float = 120.0

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full-jitter delay before attempt `attempt + 1` (attempt counts from 1)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return rand() * cap

    def next_delay(
        self,
        attempt: int,
        elapsed: float,
        retry_after: float | None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before retrying, or None when the budget is spent."""
        if attempt >= self.max_attempts:
            return None
        delay = retry_after if retry_after is not None else self.backoff(attempt, rand)
        if elapsed + delay > self.deadline:
            return None
        return delay


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    hint = headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in RETRY_STATUSES


def retry_after_seconds(headers: Mapping[str, str], now: Callable[[], float] | None = None) -> float | None:
    """The wait a response asks for, if any (never negative)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    current = now() if now is not None else time.time()
    return max(0.0, when.timestamp() - current)
