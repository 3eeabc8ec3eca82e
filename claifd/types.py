"""Small types shared across the daemon's layers.

They live here, not with the providers, so that the cache and the session
store can name them without importing the providers (and so httpx).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["DeltaCallback", "UpstreamCounters"]

# A streamed call awaits this for each piece of text, in order.
DeltaCallback = Callable[[str], Awaitable[None]]


class UpstreamCounters:
    """Upstream attempts, retries and calls that failed in the end (all providers)."""

    __slots__ = ("requests", "retries", "errors")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"<UpstreamCounters requests={self.requests} retries={self.retries} errors={self.errors}>"

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "errors": self.errors}
