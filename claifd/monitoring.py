"""Metrics and the requests that read the daemon's state: ping, status,
health and metrics.

`metrics_text()` is the Prometheus text exposition, rendered by
prometheus_client from collectors that read, at scrape time, the counters
`status` shows and the performance monitor's figures (`perf.Perf`: requests
by method, provider, model and outcome, histograms of request, upstream and
time-to-first-token durations, tokens and cost), plus the standard
`process_*` collector and `claif_build_info`. Nothing is counted twice and
nothing is computed between scrapes. Health is `health.HealthMonitor`'s.
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from claif_client.protocol import GetSpend, GetStatus, Health, Metrics, Ping, Pong, Result

from . import __version__
from .dispatch import Conn, Dispatch
from .perf import Histogram, Perf

__all__ = ["metrics_text", "register", "CONTENT_TYPE"]

Snapshot = Callable[[], dict[str, Any]]
# What GET /metrics answers with (the text format prometheus_client writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatusCollector(Collector):
    """Reads `status` and the cache's stats at scrape time."""

    def __init__(self, status: Snapshot, cache_stats: Snapshot) -> None:
        self.status = status
        self.cache_stats = cache_stats

    def collect(self) -> Iterator[Any]:
        status = self.status()
        yield GaugeMetricFamily("claif_uptime_seconds", "Seconds since the daemon started.", value=status["uptime_s"])
        yield CounterMetricFamily("claif_frames", "Requests received over the socket (all methods).",
                                  value=status["requests_total"])
        yield GaugeMetricFamily("claif_connections", "Client connections open.", value=status["connections"])
        yield GaugeMetricFamily("claif_requests_in_flight", "Requests being served.", value=status["in_flight"])
        closed = CounterMetricFamily("claif_connections_closed", "Connections the daemon closed on its own.",
                                     labels=["reason"])
        closed.add_metric(["forbidden_uid"], status["connections_refused"])
        closed.add_metric(["stalled"], status["connections_stalled"])
        yield closed
        spend = status["spend"]
        spent = CounterMetricFamily("claif_spend_usd", "USD spent on upstream calls since the daemon started (the "
                                    "price table: claif spend).", labels=["provider", "model"])
        for name, usd in spend["usd_since_start"].items():
            spent.add_metric(name.split("/", 1), usd)
        yield spent
        saved = CounterMetricFamily("claif_saved_usd", "USD saved since the daemon started: by the response cache "
                                    "(hits) and by the provider's prompt cache (net of its writes).", labels=["by"])
        for by, usd in spend["saved_since_start"].items():
            saved.add_metric([by], usd)
        yield saved
        budget = GaugeMetricFamily("claif_budget_used_ratio", "Spent over limit, per configured budget.",
                                   labels=["budget"])
        for b in spend["budgets"]:
            budget.add_metric([b["key"]], b["used"])
        yield budget
        up = status["upstream"]
        yield CounterMetricFamily("claif_upstream_requests", "HTTP attempts to providers.", value=up["requests"])
        yield CounterMetricFamily("claif_upstream_errors", "Upstream calls that failed in the end.", value=up["errors"])
        in_flight = GaugeMetricFamily("claif_provider_in_flight", "Requests in flight per provider.", labels=["provider"])
        queued = GaugeMetricFamily("claif_provider_queued", "Requests waiting for a provider slot.", labels=["provider"])
        circuit = GaugeMetricFamily("claif_provider_circuit_open", "1 while a provider's circuit is open or "
                                    "half-open (calls fail at once).", labels=["provider"])
        keys = GaugeMetricFamily("claif_provider_keys", "A provider's API keys by state.", labels=["provider", "state"])
        for name, stats in status["providers"].items():
            if "in_flight" in stats:
                in_flight.add_metric([name], stats["in_flight"])
                queued.add_metric([name], stats["queued"])
            if "circuit" in stats:
                circuit.add_metric([name], 0 if stats["circuit"]["state"] == "closed" else 1)
                for state in ("ok", "resting", "refused"):
                    keys.add_metric([name, state], sum(1 for k in stats["keys"] if k["state"] == state))
        yield in_flight
        yield queued
        yield circuit
        yield keys
        cache = self.cache_stats()
        hits = CounterMetricFamily("claif_cache_hits", "Cache hits per tier.", labels=["tier"])
        hits.add_metric(["memory"], cache["hits_memory"])
        hits.add_metric(["disk"], cache["hits_disk"])
        yield hits
        yield CounterMetricFamily("claif_cache_misses", "Cache lookups that missed.", value=cache["misses"])
        yield CounterMetricFamily("claif_cache_coalesced", "Requests that joined an identical call in flight.",
                                  value=cache["coalesced"])
        entries = GaugeMetricFamily("claif_cache_entries", "Cached answers per tier.", labels=["tier"])
        size = GaugeMetricFamily("claif_cache_bytes", "Bytes per cache tier.", labels=["tier"])
        entries.add_metric(["memory"], cache["memory"]["entries"])
        size.add_metric(["memory"], cache["memory"]["bytes"])
        if cache["disk"] is not None:
            entries.add_metric(["disk"], cache["disk"]["entries"])
            size.add_metric(["disk"], cache["disk"]["bytes"])
        yield entries
        yield size
        saved = CounterMetricFamily("claif_cache_saved_tokens", "Tokens not paid for thanks to the cache.", labels=["kind"])
        saved.add_metric(["input"], cache["saved"]["input_tokens"])
        saved.add_metric(["output"], cache["saved"]["output_tokens"])
        yield saved
        yield CounterMetricFamily("claif_cache_saved_usd", "Estimated USD saved by the cache.", value=cache["saved"]["cost_usd"])
        sessions = status["sessions"]
        yield GaugeMetricFamily("claif_sessions_in_memory", "Sessions held in memory.", value=sessions["in_memory"])
        yield GaugeMetricFamily("claif_sessions", "Sessions in the store.", value=sessions["total"])
        yield GaugeMetricFamily("claif_sessions_memory_bytes", "Accounted bytes of sessions in memory.",
                                value=sessions["memory_bytes"])
        yield GaugeMetricFamily("claif_sessions_memory_budget_bytes", "session.memory_budget.",
                                value=sessions["memory_budget_bytes"])
        yield CounterMetricFamily("claif_sessions_evictions", "Sessions evicted from memory.", value=sessions["evictions"])
        yield CounterMetricFamily("claif_sessions_write_errors", "Session store commits that failed.",
                                  value=sessions["write_errors"])
        quarantined = GaugeMetricFamily("claif_quarantined_files", "Damaged database files moved aside since start.",
                                        labels=["store"])
        quarantined.add_metric(["cache"], len(status["cache"]["quarantined"]))
        quarantined.add_metric(["sessions"], len(sessions["quarantined"]))
        yield quarantined
        auto = CounterMetricFamily("claif_auto_model_selections", "Models chosen for model=auto.", labels=["model"])
        for model, count in status["auto_selected"].items():
            auto.add_metric([model], count)
        yield auto
        yield GaugeMetricFamily("claif_config_generation", "Applied configuration changes + 1.",
                                value=status["config"]["generation"])
        yield GaugeMetricFamily("claif_config_error", "1 when the last config edit was rejected.",
                                value=1 if status["config"]["last_error"] else 0)


class _PerfCollector(Collector):
    """The performance monitor's figures, with their labels."""

    def __init__(self, perf: Perf) -> None:
        self.perf = perf

    def collect(self) -> Iterator[Any]:
        perf = self.perf
        info = GaugeMetricFamily("claif_build_info", "The daemon's version (always 1).", labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        requests = CounterMetricFamily("claif_requests", "Requests answered, by method, provider, model, outcome "
                                       "(ok, cached-exact, cached-semantic, coalesced, or an error code) and the "
                                       "front that asked (socket, openai, anthropic, responses).",
                                       labels=["method", "provider", "model", "outcome", "front"])
        for labels, hist in list(perf.requests.items()):
            requests.add_metric(list(labels), hist.count)
        yield requests
        yield _histograms("claif_request_duration_seconds", "Whole requests, as the daemon saw them.",
                          ["method", "provider", "model", "front"], perf.request_seconds())
        yield _histograms("claif_upstream_duration_seconds", "Upstream calls, all their attempts and waits.",
                          ["provider", "model"], perf.upstream_seconds)
        yield _histograms("claif_time_to_first_token_seconds", "Streamed requests: until the first text.",
                          ["provider", "model"], perf.first_token_seconds)
        attempts = CounterMetricFamily("claif_upstream_attempts", "HTTP attempts to providers, by status "
                                       "(\"error\": no HTTP answer).", labels=["provider", "status"])
        for (provider, status), n in list(perf.attempts.items()):
            attempts.add_metric([provider, status], n)
        yield attempts
        retries = CounterMetricFamily("claif_upstream_retries", "Retried upstream attempts.", labels=["provider"])
        for provider, n in list(perf.retries.items()):
            retries.add_metric([provider], n)
        yield retries
        fallbacks = CounterMetricFamily("claif_fallbacks", "Requests answered by a fallback model "
                                        "(routing.fallbacks), by the model that failed and why.",
                                        labels=["from", "to", "reason"])
        for labels3, n in list(perf.fallbacks.items()):
            fallbacks.add_metric(list(labels3), n)
        yield fallbacks
        tokens = CounterMetricFamily("claif_tokens", "Tokens billed by providers.",
                                     labels=["provider", "model", "direction"])
        for labels3, n in list(perf.tokens.items()):
            tokens.add_metric(list(labels3), n)
        yield tokens
        cost = CounterMetricFamily("claif_cost_usd", "Estimated USD billed (the price table in claifd/cache/prices.py "
                                   "and the config's `prices`).", labels=["provider", "model"])
        for labels2, usd in list(perf.cost_usd.items()):
            cost.add_metric(list(labels2), usd)
        yield cost


def _histograms(name: str, doc: str, labels: list[str], table: dict[Any, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, hist in list(table.items()):
        family.add_metric(list(key), hist.cumulative(), sum_value=hist.sum)
    return family


def metrics_text(status: Snapshot, cache_stats: Snapshot, perf: Perf | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status, cache_stats))
    if perf is not None:
        registry.register(_PerfCollector(perf))
    ProcessCollector(registry=registry)  # the standard process_* names
    return generate_latest(registry).decode()


def register(dispatch: Dispatch, status: Snapshot, cache_stats: Snapshot, perf: Perf,
             health: Callable[[], Awaitable[dict[str, Any]]], spend: Snapshot) -> None:
    """ping, status and metrics answered inline; health as a task (its first
    answer may wait for the first background run)."""
    dispatch.inline(Ping, lambda msg, conn: Pong(id=msg.id))
    dispatch.inline(GetStatus, lambda msg, conn: Result(id=msg.id, value=status()))
    dispatch.inline(GetSpend, lambda msg, conn: Result(id=msg.id, value=spend()))
    dispatch.inline(Metrics, lambda msg, conn: Result(id=msg.id, value=metrics_text(status, cache_stats, perf)))

    async def on_health(msg: Health, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await health())

    dispatch.task(Health, on_health)
