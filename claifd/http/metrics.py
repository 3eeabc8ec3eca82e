"""`metrics.listen`: GET /metrics and GET /health over HTTP, for Prometheus
and load balancers (off by default; loopback unless configured otherwise),
on the daemon's one HTTP server (server.py). Keep-alive is honoured; a
request line and headers over 16 KiB, or a connection silent for 30 s, is
closed. Changing `metrics.listen` at run time closes the old listener and
opens the new one. No token: what it shows is counts, never content.

    GET /metrics   200, the Prometheus text exposition (as `claif metrics`)
    GET /health    200 when healthy or warning, 503 when unhealthy; the
                   JSON document `claif health --json` prints
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..monitoring import CONTENT_TYPE
from .auth import host_and_origin
from .server import Exchange, HttpServer, Limits

__all__ = ["MetricsEndpoint"]

_NO_STORE = [("cache-control", "no-store")]


class MetricsEndpoint:
    limits = Limits(max_head=16 * 1024, max_body=16 * 1024, idle_timeout=30.0)

    def __init__(self, metrics: Callable[[], str], health: Callable[[], Awaitable[dict[str, Any]]],
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.metrics = metrics
        self.health = health
        self._spawn = spawn
        self.server = HttpServer(self, "metrics")
        self._ids = itertools.count(1)
        self.served = 0

    def __repr__(self) -> str:
        return f"<MetricsEndpoint {self.address or 'off'} served={self.served}>"

    @property
    def address(self) -> str | None:
        return self.server.address

    def peer_allowed(self, transport: Any) -> bool:
        return True

    def authorized(self, headers: dict[str, str]) -> bool:
        return True

    def admit(self, headers: dict[str, str], unix: bool) -> tuple[int, str] | None:
        # Its own address only, and no web page's Origin: a rebinding DNS name
        # must not read the figures (models, traffic) from a browser.
        return host_and_origin(headers, unix, self.server.address, frozenset(), frozenset())

    def request_id(self) -> str:
        self.served += 1
        return f"m{next(self._ids):x}"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._spawn(coro)

    def inline(self, ex: Exchange, authorized: bool) -> bytes | None:
        if ex.method not in ("GET", "HEAD"):
            return ex.response(405, b"only GET\n", _NO_STORE, "text/plain")
        if ex.path == "/metrics":
            return ex.response(200, self.metrics().encode(), _NO_STORE, CONTENT_TYPE)
        if ex.path == "/health":
            return None  # a task: the report may look at the disk
        return ex.response(404, b"GET /metrics or GET /health\n", _NO_STORE, "text/plain")

    async def serve(self, ex: Exchange, authorized: bool, unix: bool) -> None:
        doc = await self.health()
        await ex.respond(503 if doc["status"] == "unhealthy" else 200, doc, _NO_STORE)
