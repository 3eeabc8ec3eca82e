"""The health monitor: background checks, and the answer to `claif health`.

Two kinds of check, one answer:

* **probes** run in the background every `health.interval` (15 s),
  concurrently, each under `health.timeout`: each configured provider's
  `GET models` (no tokens spent; its latency is rated too), a write and a
  read of the session store and of the cache's disk tier, free disk space,
  memory. `health` answers from their last run: asking never resets or
  re-runs anything, and two monitors asking in a row get the same answer.
* **state checks** read what the daemon already knows and cost nothing, so
  they are evaluated at each request: the configuration's last error,
  draining, the session store's last write, damaged files moved aside, file
  descriptors, and each provider's failed calls (calls, not attempts: a
  call retried three times is one) over `health.failure_window`.

Each check: `{name, status: ok|warning|unhealthy, detail, latency_ms,
checked_at}`; the worst decides the answer (`claif health` exits 0/1/2).

| check | warning | unhealthy |
|---|---|---|
| provider:NAME | slow (> provider_latency_warning), 429/4xx, half the recent calls failed | unreachable, key refused, 5xx, every recent call failed (3 at least) |
| sessions | a damaged file moved aside in the last hour, damaged rows | store unavailable, last write failed, probe failed |
| cache_disk | disk tier off or failing, probe failed, a damaged file moved aside in the last hour | - |
| disk_space | free < disk_warning_free | free < disk_critical_free |
| memory | RSS > budgets + rss_headroom, available < memory_warning_available | available < memory_critical_available |
| file_descriptors | over 90 % of the limit in use | - |
| config | the last edit was rejected (the previous config serves) | - |
| draining | the daemon is shutting down | - |
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import psutil
import structlog

from .cache.service import ResponseCache
from .cache.tier import NoTier
from .config import Config
from .perf import Perf
from .providers.http import HttpProvider
from .semantic.service import SemanticCache
from .sessions.service import SessionService
from .spend import Spend
from .types import ServerState

__all__ = ["HealthMonitor", "QUARANTINE_WARNING_S", "rank"]

log = structlog.get_logger("claifd.health")

_RANK = {"ok": 0, "warning": 1, "unhealthy": 2}
_OVERALL = {0: "healthy", 1: "warning", 2: "unhealthy"}
# How long a damaged file moved aside keeps health at `warning`.
QUARANTINE_WARNING_S = 3600.0

Probe = Callable[[], Awaitable[tuple[str, str]]]


def rank(status: str) -> int:
    return _RANK[status]


def _check(name: str, status: str, detail: str = "", latency_ms: float | None = None,
           checked_at: float | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, "latency_ms": latency_ms,
            "checked_at": checked_at if checked_at is not None else time.time()}


def _recent(quarantined: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    recent = [q for q in quarantined if now - q["at"] < QUARANTINE_WARNING_S]
    return recent[-1] if recent else None


class HealthMonitor:
    def __init__(self, config: Callable[[], Config], state: ServerState, perf: Perf,
                 providers: dict[str, HttpProvider], cache: ResponseCache, semantic: SemanticCache,
                 sessions: SessionService, config_error: Callable[[], str | None]) -> None:
        self.config = config
        self.state = state
        self.perf = perf
        self.providers = providers
        self.cache = cache
        self.semantic = semantic
        self.sessions = sessions
        self.config_error = config_error
        self.probes: dict[str, dict[str, Any]] = {}
        self.runs = 0
        self.first_run = anyio.Event()
        self._wakeup = anyio.Event()
        self._process = psutil.Process()
        # Why a wanted listener is not open, by name ("http", "metrics"); the app sets it.
        self.listen_errors: Callable[[], dict[str, str | None]] = dict
        # What calls cost and the budgets (the app sets it).
        self.spend: Spend | None = None

    def __repr__(self) -> str:
        return f"<HealthMonitor runs={self.runs} probes={len(self.probes)}>"

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Probe now, then every `health.interval` (sooner when the config changes)."""
        while True:
            await self.probe_all()
            with anyio.move_on_after(float(self.config().health.interval)):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()

    def reconfigure(self, _: Any) -> None:
        self._wakeup.set()

    async def probe_all(self) -> None:
        probes: dict[str, Probe] = {
            "sessions": self._probe_sessions,
            "cache_disk": self._probe_cache,
            "disk_space": self._probe_disk,
            "memory": self._probe_memory,
        }
        for name, provider in self.providers.items():
            if provider.configured():
                probes[f"provider:{name}"] = self._provider_probe(provider)
        results: dict[str, dict[str, Any]] = {}
        timeout = float(self.config().health.timeout)

        async def run_one(name: str, probe: Probe) -> None:
            started = time.perf_counter()
            try:
                with anyio.fail_after(timeout):
                    status, detail = await probe()
            except TimeoutError:
                status, detail = "unhealthy", f"no answer within {timeout:g} s (health.timeout)"
            except Exception as exc:
                status, detail = "unhealthy", f"{type(exc).__name__}: {exc}"
            results[name] = _check(name, status, detail, round((time.perf_counter() - started) * 1000, 3))

        async with anyio.create_task_group() as tg:
            for name, probe in probes.items():
                tg.start_soon(run_one, name, probe)
        for name, result in results.items():
            previous = self.probes.get(name)
            if result["status"] != "ok" and (previous is None or previous["status"] != result["status"]):
                log.warning("health check failed", check=name, status=result["status"], detail=result["detail"])
        self.probes = results
        self.runs += 1
        self.first_run.set()

    def _provider_probe(self, provider: HttpProvider) -> Probe:
        async def probe() -> tuple[str, str]:
            started = time.perf_counter()
            status, detail = await provider.probe()
            elapsed = time.perf_counter() - started
            limit = float(self.config().health.provider_latency_warning)
            if status == "ok" and elapsed > limit:
                return "warning", f"slow: {elapsed * 1000:.0f} ms to list models (over {limit:g} s)"
            return status, detail

        return probe

    async def _probe_sessions(self) -> tuple[str, str]:
        if self.sessions.store_error is not None:
            return "unhealthy", f"session store unavailable: {self.sessions.store_error}"
        at_risk = await self.sessions.probe()
        if at_risk is not None:
            return "warning", at_risk
        return "ok", "write and read back"

    async def _probe_cache(self) -> tuple[str, str]:
        if not self.cache.config.enabled:
            return "ok", "cache disabled"
        if self.cache.shared:
            try:
                await self.cache.probe()
            except Exception as exc:
                return "warning", f"redis unavailable ({type(exc).__name__}: {exc}); serving without the shared cache"
            return "ok", "redis answers"
        if isinstance(self.cache.tier, NoTier):
            if not self.cache.config.dir:
                return "ok", "memory only (cache.dir is empty)"
            return "warning", f"disk tier unavailable; memory only ({self.cache.disk_error})"
        try:
            await self.cache.probe()
        except Exception as exc:
            return "warning", f"disk tier probe failed: {type(exc).__name__}: {exc}; memory still serves"
        return "ok", "write and read back"

    async def _probe_disk(self) -> tuple[str, str]:
        config = self.config()
        paths = {"sessions": Path(config.session.directory).expanduser()}
        if config.cache.enabled and config.cache.dir:
            paths["cache"] = Path(config.cache.dir).expanduser()
        worst, details = "ok", []
        for label, path in paths.items():
            existing = path
            while not existing.exists() and existing.parent != existing:
                existing = existing.parent
            free = (await anyio.to_thread.run_sync(shutil.disk_usage, existing)).free
            if free < config.health.disk_critical_free:
                status = "unhealthy"
            elif free < config.health.disk_warning_free:
                status = "warning"
            else:
                status = "ok"
            worst = max(worst, status, key=rank)
            details.append(f"{label}: {free / 1e9:.2f} GB free")
        return worst, ", ".join(details)

    async def _probe_memory(self) -> tuple[str, str]:
        config = self.config()
        rss = self._process.memory_info().rss
        available = psutil.virtual_memory().available
        budget = int(config.cache.memory_max_bytes) + int(config.session.memory_budget)
        detail = (f"RSS {rss / 1e6:.0f} MB (budgets {budget / 1e6:.0f} MB), "
                  f"system available {available / 1e6:.0f} MB")
        if available < config.health.memory_critical_available:
            return "unhealthy", detail
        if available < config.health.memory_warning_available or rss > budget + config.health.rss_headroom:
            return "warning", detail
        return "ok", detail

    # ------------------------------------------------------------ answering

    async def report(self) -> dict[str, Any]:
        """The answer to `health`: the last probes and the state checks now."""
        if not self.first_run.is_set():
            with anyio.move_on_after(float(self.config().health.timeout) + 1):
                await self.first_run.wait()
        now = time.time()
        checks = [self._provider_check(name, now) for name, p in list(self.providers.items()) if
                  f"provider:{name}" in self.probes or self.perf.call_failures(name, 1)[0]
                  or p.keys.refused() or p.circuit.state != "closed"]
        checks += [self._sessions_check(now), self._cache_check(now)]
        for name in ("disk_space", "memory"):
            if name in self.probes:
                checks.append(self.probes[name])
        checks += self._state_checks(now)
        worst = max((rank(c["status"]) for c in checks), default=0)
        return {"status": _OVERALL[worst], "checks": checks, "probed_at": self._probed_at(),
                "interval_s": float(self.config().health.interval)}

    def _probed_at(self) -> float | None:
        return max((p["checked_at"] for p in self.probes.values()), default=None)

    def _provider_check(self, name: str, now: float) -> dict[str, Any]:
        probe = self.probes.get(f"provider:{name}")
        status, details = (probe["status"], [probe["detail"]]) if probe else ("ok", [])
        window = float(self.config().health.failure_window)
        calls, failed = self.perf.call_failures(name, int(window))
        if calls:
            details.append(f"{failed} of {calls} calls failed in the last {window:g} s")
            if calls >= 3 and failed == calls:
                status = "unhealthy"
            elif failed * 2 > calls and calls >= 2:
                status = max(status, "warning", key=rank)
        provider = self.providers.get(name)
        if provider is not None:
            refused = provider.keys.refused()
            if refused:
                every = len(refused) == len(provider.keys)
                status = max(status, "unhealthy" if every else "warning", key=rank)
                details.append(f"API keys refused (401/403), set aside: {', '.join(refused)}")
            circuit = provider.circuit
            if circuit.state != "closed":
                status = max(status, "unhealthy", key=rank)
                details.append(f"circuit {circuit.state} after {circuit.failures} failures in a row; calls fail at "
                               f"once, the next probe in {circuit.retry_in():.1f} s")
        return _check(f"provider:{name}", status, "; ".join(details),
                      probe["latency_ms"] if probe else None, probe["checked_at"] if probe else now)

    def _sessions_check(self, now: float) -> dict[str, Any]:
        sessions = self.sessions
        probe = self.probes.get("sessions")
        if sessions.store_error:
            return _check("sessions", "unhealthy", f"session store unavailable: {sessions.store_error}")
        if sessions.write_error:
            return _check("sessions", "unhealthy", f"the last write failed: {sessions.write_error}")
        waiting = sessions.backend.unacknowledged()
        if waiting:
            record = waiting[-1]
            saved = (f"; {record['salvaged']} sessions and {record['messages_salvaged']} messages saved, "
                     f"{record['messages_lost']} messages lost") if "salvaged" in record else ""
            return _check("sessions", "unhealthy", f"damaged session store moved aside to {record['path']} "
                          f"({record['reason']}{saved}); look at it, then `claif session recover`"
                          + (f" ({len(waiting)} such files)" if len(waiting) > 1 else ""))
        recent = _recent(sessions.backend.quarantined(), now)
        if recent is not None:
            return _check("sessions", "warning", f"damaged session file moved aside to {recent['path']}: "
                                                 f"{recent['reason']}")
        if sessions.damaged:
            return _check("sessions", "warning", f"{sessions.damaged} damaged session(s) could not be read")
        if probe is not None:
            return probe
        return _check("sessions", "ok")

    def _cache_check(self, now: float) -> dict[str, Any]:
        cache = self.cache
        probe = self.probes.get("cache_disk")
        if not cache.config.enabled:
            return _check("cache_disk", "ok", "cache disabled")
        tier = cache.tier
        if tier.shared:
            error = tier.stats()["error"]
            if error:
                return _check("cache_disk", "warning", f"redis unavailable; serving without the shared cache "
                                                       f"({error})")
            return probe if probe is not None else _check("cache_disk", "ok", "redis")
        if isinstance(tier, NoTier) and cache.config.dir:
            return _check("cache_disk", "warning", f"disk tier unavailable; memory only ({cache.disk_error})")
        if cache.disk_error:
            return _check("cache_disk", "warning", f"last disk operation failed: {cache.disk_error}")
        recent = _recent(tier.quarantined(), now)
        if recent is not None:
            return _check("cache_disk", "warning", f"damaged cache database moved aside to {recent['path']}: "
                                                   f"{recent['reason']}")
        if probe is not None:
            return probe
        return _check("cache_disk", "ok")

    def _semantic_check(self) -> dict[str, Any]:
        error = self.semantic.error
        if error is None:
            return _check("semantic_cache", "ok")
        return _check("semantic_cache", "warning", f"{error}; answering from the exact tier only")

    def _state_checks(self, now: float) -> list[dict[str, Any]]:
        error = self.config_error()
        draining = self.state.draining
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        fds = self.state.open_fds
        listening = [f"{name}: {why}" for name, why in self.listen_errors().items() if why]
        return [
            _check("config", "warning" if error else "ok", f"last edit rejected: {error}" if error else ""),
            _check("listeners", "warning" if listening else "ok", "; ".join(listening)),
            _check("draining", "warning" if draining else "ok", "shutting down" if draining else ""),
            self._semantic_check(),
            _check("file_descriptors", "warning" if limit > 0 and fds >= 0.9 * limit else "ok",
                   f"{fds} of {limit} in use" if fds else ""),
            self._spend_check(),
        ]

    def _spend_check(self) -> dict[str, Any]:
        """Budgets at their warning mark or reached, models without a price, a ledger that cannot be written."""
        spend = self.spend
        if spend is None:
            return _check("spend", "ok")
        notes = []
        action = "refusing" if spend.config.action == "refuse" else "downgrading to auto.fast"
        for budget in spend.budgets():
            if budget["state"] == "exceeded":
                notes.append(f"{budget['key']} reached ({budget['spent_usd']:.2f} of {budget['limit_usd']:.2f} USD; "
                             f"{action})")
            elif budget["state"] == "warning":
                notes.append(f"{budget['key']} at {budget['used']:.0%} ({budget['spent_usd']:.2f} of "
                             f"{budget['limit_usd']:.2f} USD)")
        unpriced = spend.unpriced()
        if unpriced:
            notes.append(f"no price for {', '.join(unpriced)}: their calls are counted as unpriced, not free "
                         f"(set prices.NAME)")
        if spend.error:
            notes.append(spend.error)
        return _check("spend", "warning" if notes else "ok", "; ".join(notes))

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        task_group.start_soon(self.run)
