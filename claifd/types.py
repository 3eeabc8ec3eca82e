"""Small types shared across the daemon's layers.

They live here, not with the providers, so that the cache and the session
store can name them without importing the providers (and so httpx).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio

from .config import ServerConfig
from .tasks import TaskSet

__all__ = ["DeltaCallback", "UpstreamCounters", "InFlight", "ServerState"]

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


class InFlight:
    """Counts requests in progress, so shutdown can wait for the count to reach 0."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: anyio.Event | None = None

    def enter(self) -> None:
        self.count += 1

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.count:
            self._idle = anyio.Event()
            await self._idle.wait()

    def __repr__(self) -> str:
        return f"<InFlight count={self.count}>"


class ServerState:
    """What the socket server counts and obeys, owned by the app and shown in
    its status: the server changes these, never the app's own fields."""

    __slots__ = ("requests_total", "connections", "draining", "in_flight", "max_in_flight_per_connection",
                 "frame_timeout", "allowed_uids", "refused_peers", "closed_stalled", "open_fds", "tasks")

    def __init__(self, config: ServerConfig) -> None:
        self.requests_total = 0
        self.connections = 0
        self.draining = False
        self.in_flight = InFlight()
        # Connections refused for their peer's uid, and closed for stalling.
        self.refused_peers = 0
        self.closed_stalled = 0
        self.open_fds = 0
        # The request tasks and shared upstream calls in progress.
        self.tasks = TaskSet()
        self.reconfigure(config)

    def reconfigure(self, config: ServerConfig) -> None:
        self.max_in_flight_per_connection = config.max_in_flight_per_connection
        self.frame_timeout = float(config.frame_timeout)
        self.allowed_uids = frozenset([os.getuid(), *config.allowed_uids])

    def __repr__(self) -> str:
        return (f"<ServerState connections={self.connections} in_flight={self.in_flight.count} "
                f"requests_total={self.requests_total} draining={self.draining}>")
