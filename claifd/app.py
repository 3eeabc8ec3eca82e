"""The daemon's composition root: it builds and owns the configuration, the
HTTP pool, the providers, the cache, the sessions, the completion pipeline
and the dispatch table, wires configuration changes to them, and reports
status. It answers no request itself: each feature registers its handlers in
the dispatch table (`dispatch.py`), and the server (`server.py`) routes
frames through it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import psutil

from . import __version__, monitoring
from .cache import ResponseCache
from .cache import requests as cache_requests
from .cache.prices import PriceTable
from .callers import Callers
from .catalog import ModelCatalog
from .completion_requests import CompletionRequests
from .completions import Completions
from .config import Config, MetricsConfig
from .config_manager import Change, ConfigManager
from .config_requests import LiveConfig
from .dispatch import Dispatch
from .embeddings import Embeddings
from .errors import NotConfigured
from .health import HealthMonitor
from .http.front import HttpFront
from .http.metrics import MetricsEndpoint
from .logs import set_level
from .perf import Perf
from .pool import HttpPool
from .providers import OpenAIProvider, Providers
from .request_log import CompletionLog
from .semantic.service import SemanticCache
from .sessions import requests as session_requests
from .sessions.service import SessionService
from .spend import Spend
from .types import ServerState, UpstreamCounters

__all__ = ["App"]



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
        self.state = ServerState(config.server)
        self.perf = Perf(_price_table(config), enabled=config.metrics.enabled)
        self.upstream = UpstreamCounters()
        self.pool = HttpPool(config.pool)
        self.task_group: anyio.abc.TaskGroup | None = None
        self.providers = Providers(self.pool, self.upstream, config, clock, self.perf)
        self.cache = ResponseCache(config.cache, config.prices, redis=config.redis)
        # A peer of the exact cache: given where vectors are kept and how an answer is read.
        self.semantic = SemanticCache(config.cache.semantic, self.cache,
                                      lambda key, namespace: self.cache.lookup(key, namespace=namespace),
                                      self._embeddings)
        self.cache.watchers.append(self.semantic)
        self.sessions = SessionService(config.session, redis=config.redis)
        self.completions = Completions(settings, self.providers, self.cache, self.semantic, self.sessions,
                                       self.state, self.perf)
        self.callers = Callers(settings)
        self.live_config = LiveConfig(settings, self.callers)
        http_providers = self.providers.http  # (kept current as sections come and go)
        self.health = HealthMonitor(lambda: self.settings.config, self.state, self.perf, http_providers,
                                    self.cache, self.semantic, self.sessions, lambda: self.settings.last_error)
        self.metrics_http = MetricsEndpoint(self.metrics_text, self.health.report, self.state.tasks.spawn)
        self.embeddings = Embeddings(self.cache, self.providers, lambda: self.settings.config, self.perf,
                                     self.state.tasks.spawn)
        self.front = HttpFront(self.completions, self.embeddings, lambda: self.catalog.list(), self.metrics_text,
                               self.health.report, lambda: self.state.allowed_uids, settings.global_path.parent)
        self.request_log = CompletionLog(config.log)
        self.completions.request_log = self.request_log
        self.spend = Spend(config.budgets, PriceTable(_price_table(config)))
        self.completions.spend = self.spend
        self.embeddings.spend = self.spend
        self.health.spend = self.spend
        self.catalog = ModelCatalog(http_providers, lambda: self.settings.config, self.perf, self.request_log)
        self.dispatch = Dispatch()
        self.completion_requests = CompletionRequests(self.completions)
        self.completion_requests.register(self.dispatch)
        cache_requests.register(self.dispatch, self.cache, self.cache_stats)
        session_requests.register(self.dispatch, self.sessions)
        self.live_config.register(self.dispatch)
        self.catalog.register(self.dispatch)
        monitoring.register(self.dispatch, self.status, self.cache_stats, self.perf, self.health.report,
                            lambda: self.spend.report())
        self._process = psutil.Process()
        self._attach()

    @property
    def config(self) -> Config:
        """The configuration in force now (it changes on reloads)."""
        return self.settings.config

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start what runs in the background (the cache's disk writer, health checks, the HTTP front;
        request tasks and flights are `state.tasks`)."""
        self.task_group = task_group
        self.pool.start(task_group)
        await self.cache.start(task_group)
        await self.semantic.start(task_group)
        await self.sessions.start(task_group)
        self.health.start(task_group)
        self.request_log.start(task_group)
        await self.spend.start(task_group)
        await self.metrics_http.server.start(task_group, "", self.config.metrics.listen)
        await self.front.start(task_group, self.config.server.http,
                               str(Path(self.socket_path).with_name("claifd-http.sock")) if self.socket_path else "")

    async def config_reload(self, reason: str) -> list[Change]:
        return await self.live_config.reload(reason)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            self.spend.close()
            await self.sessions.aclose()
            await self.cache.aclose()
            await self.pool.aclose()

    def __repr__(self) -> str:
        return f"<App {self.state!r}>"

    # ------------------------------------------------- live configuration

    def _attach(self) -> None:
        """Each component gets its own section after every change to it."""
        attach = self.settings.attach
        attach("logging", lambda section: set_level(section.level))
        attach("pool", self.pool.reconfigure)
        attach("providers", self.providers.reconfigure)
        attach("retry", self.providers.reconfigure_retry)
        attach("cache", self.cache.reconfigure)
        attach("cache.semantic", self.semantic.reconfigure)
        attach("redis", self.cache.reconfigure_redis)
        attach("redis", self.sessions.reconfigure_redis)
        attach("prices", self.cache.set_prices)
        attach("session", self.sessions.reconfigure)
        attach("server", self.state.reconfigure)
        attach("health", self.health.reconfigure)
        attach("metrics", self._reconfigure_metrics)
        attach("server.http", self.front.reconfigure)
        attach("log", self.request_log.reconfigure)
        self.health.listen_errors = lambda: {"http": self.front.server.error, "metrics": self.metrics_http.server.error}
        self.live_config.probes["server.http.listen"] = self.front.server.can_listen
        self.live_config.probes["metrics.listen"] = self.metrics_http.server.can_listen
        attach("prices", lambda _: self.perf.set_prices(_price_table(self.config)))
        attach("prices", lambda _: self.spend.set_prices(PriceTable(_price_table(self.config))))
        attach("budgets", self.spend.reconfigure)
        attach("", self.callers.reconfigure)
        attach("", self.completions.reconfigure)
        attach("", self.completion_requests.reconfigure)
        attach("", self.front.forget)

    def _reconfigure_metrics(self, section: MetricsConfig) -> None:
        self.perf.enabled = section.enabled
        self.metrics_http.server.want("", section.listen)

    async def _embeddings(self, model: str, texts: list[str]) -> list[list[float]]:
        """The semantic cache's openai embedder: /embeddings of the `openai` provider (or the first of its type)."""
        provider = self.providers.of_type(OpenAIProvider, "openai")
        if provider is None:
            raise NotConfigured("the openai embedder needs a provider of type openai")
        assert isinstance(provider, OpenAIProvider)
        return await provider.embeddings(model, texts)

    def metrics_text(self) -> str:
        return monitoring.metrics_text(self.status, self.cache_stats, self.perf)

    def cache_stats(self) -> dict[str, Any]:
        """`claif cache stats`: the exact cache's tiers and the semantic cache beside them."""
        return {**self.cache.stats(), "semantic": self.semantic.stats()}

    # ------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        state = self.state
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self.clock() - self.started_at, 3),
            "socket": self.socket_path,
            "requests_total": state.requests_total,
            "connections": state.connections,
            "connections_refused": state.refused_peers,
            "connections_stalled": state.closed_stalled,
            "open_fds": state.open_fds,
            "in_flight": state.in_flight.count,
            # Live event-loop tasks: flat over time, or something leaks.
            "tasks": len(asyncio.all_tasks()),
            "draining": state.draining,
            "cache": self.cache.status(),
            "sessions": self.sessions.stats(),
            "auto_selected": dict(self.completions.auto_selected),
            "upstream": self.upstream.as_dict(),
            "pool": self.pool.stats(),
            "providers": {name: p.stats() for name, p in sorted(self.providers.items())},
            "config": {"generation": self.settings.generation, "last_error": self.settings.last_error,
                       "warnings": self.settings.warnings()},
            "performance": self.perf.summary(),
            "process": self._process_figures(),
            "metrics_listen": self.metrics_http.address,
            "metrics_listen_error": self.metrics_http.server.error,
            "http": self.front.info(),
            "spend": self._spend_status(),
        }

    def _spend_status(self) -> dict[str, Any]:
        report = self.spend.report()
        return {"today_usd": report["today"]["usd"], "month_usd": report["month"]["usd"],
                "saved_today_usd": report["today"]["saved"], "budgets": report["budgets"],
                "action": report["action"], "unpriced": report["unpriced"], "ledger": report["ledger"],
                # Since the daemon started (the metrics' counters).
                "usd_since_start": {f"{p}/{m}": round(usd, 9) for (p, m), usd in self.spend.usd_total.items()},
                "saved_since_start": {k: round(v, 9) for k, v in self.spend.saved_total.items()}}

    def status_line(self) -> str:
        """One line for systemd's STATUS= (`systemctl --user status claifd`)."""
        cache = self.cache
        lookups = cache.hits + cache.misses
        rate = f"{cache.hits / lookups:.0%}" if lookups else "-"
        failed = sum(self.perf.call_failures(name, 300)[1] for name in self.providers)
        return (f"{self.state.requests_total} requests, {self.state.in_flight.count} in flight, "
                f"cache hit rate {rate}, {failed} failed upstream calls in 5 min")

    def _process_figures(self) -> dict[str, Any]:
        proc = self._process
        with proc.oneshot():
            return {
                "rss_bytes": proc.memory_info().rss,
                "cpu_percent": proc.cpu_percent(None),  # since the previous status
                "cpu_seconds": round(sum(proc.cpu_times()[:2]), 3),
                "threads": proc.num_threads(),
            }


def _price_table(config: Config) -> dict[str, dict[str, Any]]:
    return {k: msgspec.structs.asdict(v) for k, v in config.prices.items()}
