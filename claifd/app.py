"""The daemon's application object: it owns the configuration, the providers
and the counters, and answers requests. It knows nothing about sockets; the
server (`server.py`) decodes frames and calls it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from . import __version__
from .config import Config
from .errors import BadRequest, ClaifdError, NotFound, ShuttingDown, Unsupported
from .providers import DeltaCallback, EchoProvider, Provider, resolve_model

__all__ = ["App", "InFlight", "UpstreamStats"]

log = structlog.get_logger("claifd.app")

_ROLES = frozenset({"user", "assistant", "system", "tool"})


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


class UpstreamStats:
    __slots__ = ("requests", "retries", "errors")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "errors": self.errors}


class App:
    def __init__(
        self,
        config: Config,
        *,
        socket_path: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.socket_path = socket_path
        self.clock = clock
        self.started_at = clock()
        self.requests_total = 0
        self.connections = 0
        self.draining = False
        self.in_flight = InFlight()
        self.upstream = UpstreamStats()
        self.config_generation = 1
        self.config_last_error: str | None = None
        self.providers: dict[str, Provider] = {"echo": EchoProvider()}

    def __repr__(self) -> str:
        return (
            f"<App connections={self.connections} in_flight={self.in_flight.count} "
            f"requests_total={self.requests_total} draining={self.draining}>"
        )

    # ------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self.clock() - self.started_at, 3),
            "socket": self.socket_path,
            "requests_total": self.requests_total,
            "connections": self.connections,
            "in_flight": self.in_flight.count,
            "draining": self.draining,
            # The cache and the session store are not built yet; their
            # counters are reported (as zero) so monitors can rely on the keys.
            "cache": {"hits": 0, "misses": 0, "coalesced": 0, "entries": 0, "bytes": 0},
            "sessions": {
                "in_memory": 0,
                "total": 0,
                "memory_bytes": 0,
                "memory_budget_bytes": int(self.config.session.memory_budget),
                "evictions": 0,
            },
            "upstream": self.upstream.as_dict(),
            "providers": sorted(self.providers),
            "config": {"generation": self.config_generation, "last_error": self.config_last_error},
        }

    # --------------------------------------------------------- completions

    def _route(self, request: CompletionRequest) -> tuple[Provider, str]:
        if self.draining:
            raise ShuttingDown("the daemon is shutting down")
        _validate(request)
        if request.session is not None:
            raise Unsupported("sessions are not available in this daemon version yet")
        if request.cache is not None and request.cache.mode == "only":
            # No response cache yet: nothing can be answered from it.
            raise NotFound("no cached answer for this request (cache mode 'only')")
        provider_name, model = resolve_model(request.model, self.config.client.model, self.config.models)
        provider = self.providers.get(provider_name)
        if provider is None:
            raise BadRequest(
                f"unknown provider {provider_name!r} (available: {', '.join(sorted(self.providers))})"
            )
        return provider, model

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        provider, model = self._route(request)
        self.upstream.requests += 1
        try:
            return await provider.complete(request, model)
        except ClaifdError:
            self.upstream.errors += 1
            raise

    async def stream(self, request: CompletionRequest, on_delta: DeltaCallback) -> CompletionResponse:
        provider, model = self._route(request)
        self.upstream.requests += 1
        try:
            return await provider.stream(request, model, on_delta)
        except ClaifdError:
            self.upstream.errors += 1
            raise

    def request_timeout(self, request: CompletionRequest) -> float:
        return request.timeout if request.timeout is not None else float(self.config.client.timeout)


def _validate(request: CompletionRequest) -> None:
    if not request.messages:
        raise BadRequest("messages must not be empty")
    for i, message in enumerate(request.messages):
        if message.role not in _ROLES:
            raise BadRequest(f"messages[{i}].role {message.role!r} is not one of {', '.join(sorted(_ROLES))}")
    if request.max_tokens is not None and request.max_tokens <= 0:
        raise BadRequest("max_tokens must be positive")
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        raise BadRequest("temperature must be between 0 and 2")
    if request.timeout is not None and request.timeout <= 0:
        raise BadRequest("timeout must be positive")
