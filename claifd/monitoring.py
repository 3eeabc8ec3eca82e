"""Health and metrics: what a person or a monitor asks the running daemon.

`health()` runs cheap checks over the daemon's own state and rates each
`ok`, `warning` or `unhealthy`; the worst one is the answer (`claif health`
exits 0, 1 or 2 accordingly):

| check | warning | unhealthy |
|---|---|---|
| config | the last edit was rejected (the previous config serves) | - |
| draining | the daemon is shutting down | - |
| cache_disk | the disk tier is off, its last write/read failed, or a damaged file was moved aside in the last hour (memory still serves) | - |
| sessions | a damaged file or WAL was moved aside in the last hour, or damaged rows were found | the store is unavailable, or its last write failed (until a write succeeds again) |
| upstream | more than 50 % of the last upstream calls failed (at least 10 calls) | - |

`metrics_text()` is the Prometheus text exposition, rendered by
prometheus_client from a collector that reads the same counters `status`
shows, at scrape time (nothing is counted twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from claif_client.protocol import GetStatus, Health, Metrics, Ping, Pong, Result

from .dispatch import Dispatch

__all__ = ["health", "metrics_text", "HealthWindow", "register"]

Snapshot = Callable[[], dict[str, Any]]

_RANK = {"ok": 0, "warning": 1, "unhealthy": 2}
_STATUS = {0: "healthy", 1: "warning", 2: "unhealthy"}


class HealthWindow:
    """Upstream outcomes since the previous health check (a moving picture,
    not all-time totals, so an old outage does not count forever)."""

    def __init__(self) -> None:
        self._requests = 0
        self._errors = 0

    def delta(self, requests: int, errors: int) -> tuple[int, int]:
        d = (requests - self._requests, errors - self._errors)
        self._requests, self._errors = requests, errors
        return d


# How long a damaged file moved aside keeps health at `warning`.
QUARANTINE_WARNING_S = 3600.0


def _recent(quarantined: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    recent = [q for q in quarantined if now - q["at"] < QUARANTINE_WARNING_S]
    return recent[-1] if recent else None


def health(status: Mapping[str, Any], window: HealthWindow, now: float | None = None) -> dict[str, Any]:
    """Rate a `status` snapshot (what `claif status` shows); `window` keeps
    the upstream counts of the previous check."""
    now = time.time() if now is None else now
    checks: list[dict[str, str]] = []

    def check(name: str, rating: str, detail: str = "") -> None:
        checks.append({"name": name, "status": rating, "detail": detail})

    error = status["config"]["last_error"]
    check("config", "warning" if error else "ok", f"last edit rejected: {error}" if error else "")
    check("draining", "warning" if status["draining"] else "ok", "shutting down" if status["draining"] else "")
    cache = status["cache"]
    if cache["disk_tier"] == "disabled":
        check("cache_disk", "ok", "cache disabled")
    elif cache["disk_tier"] == "unavailable":
        check("cache_disk", "warning", "disk tier unavailable; memory only")
    elif cache["disk_error"]:
        check("cache_disk", "warning", f"last disk operation failed: {cache['disk_error']}")
    elif recent := _recent(cache["quarantined"], now):
        check("cache_disk", "warning", f"damaged cache database moved aside to {recent['path']}: {recent['reason']}")
    else:
        check("cache_disk", "ok")
    sessions = status["sessions"]
    if sessions["store_error"]:
        check("sessions", "unhealthy", f"session store unavailable: {sessions['store_error']}")
    elif sessions["write_error"]:
        check("sessions", "unhealthy", f"the last write failed: {sessions['write_error']}")
    elif recent := _recent(sessions["quarantined"], now):
        check("sessions", "warning", f"damaged session file moved aside to {recent['path']}: {recent['reason']}")
    elif sessions["damaged"]:
        check("sessions", "warning", f"{sessions['damaged']} damaged session(s) could not be read")
    else:
        check("sessions", "ok")
    upstream = status["upstream"]
    requests, errors = window.delta(upstream["requests"], upstream["errors"])
    if requests >= 10 and errors * 2 > requests:
        check("upstream", "warning", f"{errors} of the last {requests} upstream calls failed")
    else:
        check("upstream", "ok", f"{errors} of the last {requests} upstream calls failed" if requests else "")
    worst = max(_RANK[c["status"]] for c in checks)
    return {"status": _STATUS[worst], "checks": checks}


class _StatusCollector(Collector):
    """Reads `status` and the cache's stats at scrape time."""

    def __init__(self, status: Snapshot, cache_stats: Snapshot) -> None:
        self.status = status
        self.cache_stats = cache_stats

    def collect(self) -> Iterator[Any]:
        status = self.status()
        yield GaugeMetricFamily("claif_uptime_seconds", "Seconds since the daemon started.", value=status["uptime_s"])
        yield CounterMetricFamily("claif_requests", "Requests received over the socket.", value=status["requests_total"])
        yield GaugeMetricFamily("claif_connections", "Client connections open.", value=status["connections"])
        yield GaugeMetricFamily("claif_requests_in_flight", "Requests being served.", value=status["in_flight"])
        closed = CounterMetricFamily("claif_connections_closed", "Connections the daemon closed on its own.",
                                     labels=["reason"])
        closed.add_metric(["forbidden_uid"], status["connections_refused"])
        closed.add_metric(["stalled"], status["connections_stalled"])
        yield closed
        yield GaugeMetricFamily("claif_open_fds", "File descriptors the daemon holds (sampled every 2 s).",
                                value=status["open_fds"])
        up = status["upstream"]
        yield CounterMetricFamily("claif_upstream_requests", "HTTP attempts to providers.", value=up["requests"])
        yield CounterMetricFamily("claif_upstream_retries", "Retried upstream attempts.", value=up["retries"])
        yield CounterMetricFamily("claif_upstream_errors", "Upstream calls that failed in the end.", value=up["errors"])
        in_flight = GaugeMetricFamily("claif_provider_in_flight", "Requests in flight per provider.", labels=["provider"])
        queued = GaugeMetricFamily("claif_provider_queued", "Requests waiting for a provider slot.", labels=["provider"])
        for name, stats in status["providers"].items():
            if "in_flight" in stats:
                in_flight.add_metric([name], stats["in_flight"])
                queued.add_metric([name], stats["queued"])
        yield in_flight
        yield queued
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


def metrics_text(status: Snapshot, cache_stats: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status, cache_stats))
    return generate_latest(registry).decode()


def register(dispatch: Dispatch, status: Snapshot, cache_stats: Snapshot, window: HealthWindow) -> None:
    """ping, status, health and metrics: all answered inline."""
    dispatch.inline(Ping, lambda msg, conn: Pong(id=msg.id))
    dispatch.inline(GetStatus, lambda msg, conn: Result(id=msg.id, value=status()))
    dispatch.inline(Health, lambda msg, conn: Result(id=msg.id, value=health(status(), window)))
    dispatch.inline(Metrics, lambda msg, conn: Result(id=msg.id, value=metrics_text(status, cache_stats)))
