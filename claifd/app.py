"""The daemon's application object: it owns the configuration, the HTTP pool,
the providers and the counters, and answers requests. It knows nothing about
sockets; the server (`server.py`) decodes frames and calls it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import structlog

from claif_client.protocol import (
    BatchItem,
    BatchProgress,
    CompletionRequest,
    CompletionResponse,
    ErrorCode,
)

from . import __version__
from .auto import AUTO, choose_model
from .cache import ResponseCache, cache_key, split_for_replay
from .cache.entry import MemEntry
from .cache.flight import Flight
from .config import Config
from .config_manager import Change, ConfigManager, FileRead, Scope
from .errors import BadRequest, NotFound, ShuttingDown, error_info
from .logs import set_level
from .monitoring import HealthWindow
from .pool import HttpPool
from .providers import (
    AnthropicProvider,
    DeltaCallback,
    EchoProvider,
    OpenAIProvider,
    Provider,
    resolve_model,
)
from .sessions.service import SessionService
from .types import UpstreamCounters

__all__ = ["App", "InFlight", "Prepared", "MAX_BATCH_ITEMS", "CACHE_MODES"]

log = structlog.get_logger("claifd.app")

_ROLES = frozenset({"user", "assistant", "system", "tool"})
# A batch is one frame (16 MiB) anyway; this bounds the tasks one call spawns.
MAX_BATCH_ITEMS = 100_000

ProgressCallback = Callable[[BatchProgress], Awaitable[None]]

CACHE_MODES = frozenset({"use", "refresh", "bypass", "only"})
# Distinct recent requests whose cache keys the hot path remembers.
HOT_KEYS = 4096


class Prepared:
    """A validated, routed request, with its cache key when the cache applies."""

    __slots__ = ("request", "provider", "model", "key", "namespace", "mode")

    def __init__(self, request: CompletionRequest, provider: Provider, model: str,
                 key: str | None, namespace: str, mode: str) -> None:
        self.request = request
        self.provider = provider
        self.model = model
        self.key = key
        self.namespace = namespace
        self.mode = mode

    def __repr__(self) -> str:
        return f"<Prepared {self.provider.name}/{self.model} mode={self.mode} key={(self.key or '-')[:12]}>"


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


class App:
    """Create inside the event loop (it builds the pool and limiters); `aclose()` at the end."""

    def __init__(
        self,
        settings: ConfigManager,
        *,
        socket_path: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        config = settings.config
        self.socket_path = socket_path
        self.clock = clock
        self.started_at = clock()
        self.requests_total = 0
        self.connections = 0
        self.draining = False
        self.in_flight = InFlight()
        self.upstream = UpstreamCounters()
        self.pool = HttpPool(config.pool)
        self.task_group: anyio.abc.TaskGroup | None = None
        self._config_lock = anyio.Lock()
        current = self.current_config
        self.providers: dict[str, Provider] = {
            "echo": EchoProvider(self.upstream),
            "anthropic": AnthropicProvider(self.pool, self.upstream, current, clock=clock),
            "openai": OpenAIProvider(self.pool, self.upstream, current, clock=clock),
        }
        self.cache = ResponseCache(config.cache, config.prices)
        self.sessions = SessionService(config.session)
        # How often `model: "auto"` chose each model.
        self.auto_selected: dict[str, int] = {}
        self.health_window = HealthWindow()
        # Raw request bytes -> cache key, for requests already prepared once
        # under this config generation (the hot path's shortcut).
        self._hot_keys: dict[bytes, str] = {}
        self._hot_generation = settings.generation
        self._wire_callbacks()

    @property
    def config(self) -> Config:
        """The configuration in force now (it changes on reloads)."""
        return self.settings.config

    def current_config(self) -> Config:
        return self.settings.config

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start what runs in the background (the cache's disk writer, flights)."""
        self.task_group = task_group
        await self.cache.start(task_group)
        await self.sessions.start(task_group)

    # ------------------------------------------------- live configuration

    def _wire_callbacks(self) -> None:
        on = self.settings.register_callback
        on("logging.level", lambda old, new, changes: set_level(new.logging.level))
        on("pool.*", self._on_pool)
        on("providers.*.max_concurrency", self._on_provider_limits)
        on("cache.*", self._on_cache)
        on("prices*", lambda old, new, changes: self.cache.set_prices(new.prices))
        on("session.memory_budget", lambda old, new, changes: self.sessions.resize(int(new.session.memory_budget)))

    def _on_pool(self, old: Config, new: Config, changes: list[Change]) -> None:
        """A new set of connections for new requests; the old ones finish what
        they carry, then close."""
        retired = self.pool.reconfigure(new.pool)
        if self.task_group is not None:
            self.task_group.start_soon(self.pool.close_when_idle, retired)

    def _on_provider_limits(self, old: Config, new: Config, changes: list[Change]) -> None:
        for name in ("anthropic", "openai"):
            provider = self.providers[name]
            assert isinstance(provider, (AnthropicProvider, OpenAIProvider))
            provider.limiter.total_tokens = provider.provider_config().max_concurrency

    def _on_cache(self, old: Config, new: Config, changes: list[Change]) -> None:
        self.cache.reconfigure(new.cache)
        restart_only = [c.key for c in changes if c.key in ("cache.dir", "cache.compression")]
        if restart_only:
            log.warning("cache settings take effect at the next start", keys=restart_only)

    async def config_reload(self, reason: str) -> list[Change]:
        """Re-read the config files (in a worker thread) and apply them."""
        async with self._config_lock:
            reads: dict[str, FileRead] = await anyio.to_thread.run_sync(self.settings.read_files)
            return self.settings.apply_reads(reads, reason)

    async def config_set(self, key: str, value: Any, scope: Scope) -> list[Change]:
        async with self._config_lock:
            if scope == "runtime":
                return self.settings.set_runtime(key, value)
            layer = await anyio.to_thread.run_sync(self.settings.write_file_setting, scope, key, value)
            return self.settings.adopt_layer(scope, layer)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.sessions.aclose()
            await self.cache.aclose()
            await self.pool.aclose()

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
            # Live event-loop tasks: flat over time, or something leaks.
            "tasks": len(asyncio.all_tasks()),
            "draining": self.draining,
            "cache": self.cache.status(),
            "sessions": self.sessions.stats(),
            "auto_selected": dict(self.auto_selected),
            "upstream": self.upstream.as_dict(),
            "pool": self.pool.stats(),
            "providers": {name: p.stats() for name, p in sorted(self.providers.items())},
            "config": {"generation": self.settings.generation, "last_error": self.settings.last_error},
        }

    # --------------------------------------------------------- completions

    def prepare(self, request: CompletionRequest) -> Prepared:
        """Validate and route a request and compute its cache key (no I/O).

        Raises the request's `ClaifdError` (bad_request, shutting_down...).
        """
        if self.draining:
            raise ShuttingDown("the daemon is shutting down")
        _validate(request)
        if request.session is not None:
            raise BadRequest("a request within a session is sent with `complete`, not in a batch")
        config = self.settings.config  # once: this is the hot path
        name = request.model or config.client.model
        if name == AUTO:
            name, _rule = choose_model(request, config.auto)
            self.auto_selected[name] = self.auto_selected.get(name, 0) + 1
        provider_name, model = resolve_model(name, config.client.model, config.models)
        provider = self.providers.get(provider_name)
        if provider is None:
            raise BadRequest(
                f"unknown provider {provider_name!r} (available: {', '.join(sorted(self.providers))})"
            )
        control = request.cache
        mode = control.mode if control is not None else "use"
        if mode not in CACHE_MODES:
            raise BadRequest(f"cache mode {mode!r} is not one of {', '.join(sorted(CACHE_MODES))}")
        namespace = (control.namespace if control is not None else None) or config.cache.namespace
        key = None
        if config.cache.enabled and mode != "bypass":
            key = cache_key(provider_name, model, request, namespace)
        elif mode == "only":
            raise NotFound("cache mode 'only' but the cache is disabled")
        return Prepared(request, provider, model, key, namespace, mode)

    def hot_key(self, raw: msgspec.Raw) -> str | None:
        """The cache key of a request seen before, from its bytes alone.

        Identical bytes under the same configuration validate, route and hash
        identically, so the key is reused; a config change clears the table.
        """
        if self._hot_generation != self.settings.generation:
            self._hot_keys.clear()
            self._hot_generation = self.settings.generation
        if self.draining or not self._hot_keys:
            return None
        return self._hot_keys.get(bytes(raw))

    def remember_key(self, raw: msgspec.Raw, prepared: Prepared) -> None:
        request = prepared.request
        if prepared.key is None or prepared.mode not in ("use", "only") or request.model == AUTO:
            return  # only plain cache reads take the shortcut; auto choices are counted each time
        if len(self._hot_keys) >= HOT_KEYS:
            self._hot_keys.clear()
        self._hot_keys[bytes(raw)] = prepared.key

    def cached_reply(self, prepared: Prepared) -> MemEntry | None:
        """A memory-tier hit for `prepared`, without blocking (the hot path)."""
        if prepared.key is None or prepared.mode == "refresh":
            return None
        return self.cache.lookup_memory(prepared.key)

    async def complete(self, request: CompletionRequest | Prepared) -> CompletionResponse:
        prepared = request if isinstance(request, Prepared) else self.prepare(request)
        if prepared.key is None:
            return await prepared.provider.complete(prepared.request, prepared.model)
        if prepared.mode != "refresh":
            entry = await self.cache.lookup(prepared.key)
            if entry is not None:
                return entry.response()
            if prepared.mode == "only":
                raise NotFound("no cached answer for this request (cache mode 'only')")
        flight = self._flight(prepared, streaming=False)
        async with flight.subscription():
            return await flight.result()

    async def stream(self, request: CompletionRequest | Prepared, on_delta: DeltaCallback) -> CompletionResponse:
        prepared = request if isinstance(request, Prepared) else self.prepare(request)
        if prepared.key is None:
            return await prepared.provider.stream(prepared.request, prepared.model, on_delta)
        if prepared.mode != "refresh":
            entry = await self.cache.lookup(prepared.key)
            if entry is not None:
                for piece in replay_chunks(entry):
                    await on_delta(piece)
                return entry.response()
            if prepared.mode == "only":
                raise NotFound("no cached answer for this request (cache mode 'only')")
        flight = self._flight(prepared, streaming=True)
        async with flight.subscription():
            return await flight.follow(on_delta)

    def _flight(self, prepared: Prepared, streaming: bool) -> Flight:
        provider, model, request = prepared.provider, prepared.model, prepared.request
        key, namespace = prepared.key, prepared.namespace
        assert key is not None

        async def call(on_delta: DeltaCallback | None) -> CompletionResponse:
            if on_delta is None:
                response = await provider.complete(request, model)
            else:
                response = await provider.stream(request, model, on_delta)
            return msgspec.structs.replace(response, cache_key=key)

        def on_success(response: CompletionResponse, chunks: list[str] | None) -> None:
            self.cache.store(key, namespace, request, response, chunks)

        return self.cache.join(key, streaming, call, self.request_timeout(request), on_success)

    async def session_send(
        self, request: CompletionRequest, on_delta: DeltaCallback | None
    ) -> tuple[CompletionResponse, dict[str, Any]]:
        """`complete` within a session: its context goes upstream, the new
        message and the reply are saved before the reply is returned."""
        if self.draining:
            raise ShuttingDown("the daemon is shutting down")
        assert request.session is not None
        _validate(request)
        context = self.config.session.context

        async def complete(upstream: CompletionRequest, deltas: DeltaCallback | None) -> CompletionResponse:
            if deltas is None:
                return await self.complete(upstream)
            return await self.stream(upstream, deltas)

        return await self.sessions.send(
            request.session, request, complete, on_delta, context.max_tokens, context.recent
        )

    def request_timeout(self, request: CompletionRequest) -> float:
        return request.timeout if request.timeout is not None else float(self.config.client.timeout)

    async def complete_with_deadline(self, request: CompletionRequest) -> CompletionResponse:
        with anyio.fail_after(self.request_timeout(request)):
            return await self.complete(request)

    # --------------------------------------------------------------- batch

    async def batch(
        self, requests: list[CompletionRequest], concurrency: int | None, on_progress: ProgressCallback
    ) -> list[BatchItem]:
        """Every request, at most `concurrency` at a time; results in input order.

        One item's failure is recorded in its `BatchItem.error` and does not
        affect the others.
        """
        if not requests:
            return []
        if len(requests) > MAX_BATCH_ITEMS:
            raise BadRequest(f"a batch holds at most {MAX_BATCH_ITEMS} requests, got {len(requests)}")
        limit = concurrency if concurrency is not None else self.config.batch.concurrency
        if limit < 1:
            raise BadRequest("batch concurrency must be at least 1")
        limiter = anyio.CapacityLimiter(limit)
        results: list[BatchItem | None] = [None] * len(requests)
        done = 0

        async def run_one(index: int, request: CompletionRequest) -> None:
            nonlocal done
            async with limiter:
                try:
                    item = BatchItem(index=index, response=await self.complete_with_deadline(request))
                except Exception as exc:
                    item = BatchItem(index=index, error=error_info(exc))
                    if item.error is not None and item.error.code == ErrorCode.INTERNAL:
                        log.exception("batch item failed", index=index)
            results[index] = item
            done += 1
            await on_progress(BatchProgress(index=index, ok=item.error is None, done=done, total=len(requests)))

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                tg.start_soon(run_one, index, request)
        return [r for r in results if r is not None]


def replay_chunks(entry: MemEntry) -> list[str] | tuple[str, ...]:
    """A cached answer as stream chunks: the original boundaries when it was
    streamed, else word-sized pieces of its text."""
    if entry.chunks is not None:
        return entry.chunks
    return split_for_replay(entry.response().text)


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
