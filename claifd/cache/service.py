"""The response cache as the daemon uses it: the memory tier, a second tier
behind it, TTLs, single-flight, stats.

The memory tier is consulted synchronously (the server answers memory hits
inside `data_received`, without a task). The second tier is the disk
(SQLite) or Redis, behind one interface (tier.py: `SecondTier`); a memory
miss awaits it, a stored answer is kept there behind the reply (disk) or
before it (Redis, where the other daemons look), and a change of
`cache.backend`, `cache.dir` or the Redis address switches it live.

Only complete successful responses are stored: the providers raise on any
error and on a stream that ended early, so a response object exists only
for a complete answer, and a cancelled call produces none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..config import CacheConfig, Price, RedisConfig
from ..redis_client import store_source
from . import report
from .disk import DiskHit
from .entry import MemEntry, make_entry
from .flight import Flights
from .memory import MemoryLRU
from .policy import base_ttl, entry_ttl, ttl_cap
from .prices import PriceTable
from .tier import NoTier, SecondTier, StoredVector, VectorRow, build_tier

__all__ = ["CacheWatcher", "ResponseCache"]

log = structlog.get_logger("claifd.cache")


class CacheWatcher(Protocol):
    """Told when stored answers go (an index of them, such as the semantic
    cache, drops its entries) and when another daemon indexed one."""

    def forget(self, key: str) -> None: ...

    def clear(self, namespace: str | None) -> None: ...

    def indexed(self, key: str) -> None: ...


class ResponseCache:
    def __init__(
        self,
        config: CacheConfig,
        prices: dict[str, Price] | None = None,
        *,
        redis: RedisConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.prices = PriceTable({k: msgspec.structs.asdict(v) for k, v in (prices or {}).items()})
        self.memory = MemoryLRU(int(config.memory_max_bytes))
        self.redis_config = redis
        # What the second tier was built from (a change rebuilds it: `_switch`).
        self._tier_source = self._second_tier_source()
        self._switching = anyio.Lock()
        self.tier: SecondTier = self._build_tier()
        self.flights = Flights()
        self.hits_memory = 0
        self.hits_disk = 0
        self.misses = 0
        self.stores = 0
        self.disk_errors = 0
        # The last disk failure, for health and status; cleared by a success.
        self.disk_error: str | None = None
        self.not_stored = {"empty": 0, "too_large": 0}
        self.saved_input_tokens = 0
        self.saved_output_tokens = 0
        self.saved_cost_usd = 0.0
        self._task_group: anyio.abc.TaskGroup | None = None
        # Told when answers go (the semantic cache: the app adds it).
        self.watchers: list[CacheWatcher] = []

    def _second_tier_source(self) -> tuple[Any, ...]:
        return store_source(self.config.backend, self.redis_config, self.config.dir)

    def _build_tier(self) -> SecondTier:
        return build_tier(self.config, self.redis_config, self.clock)

    async def _opened(self, tier: SecondTier) -> SecondTier:
        """`tier`, open; NoTier (memory only) if it cannot open."""
        if self._task_group is None:
            return tier
        try:
            await tier.open(self._task_group, self)
        except Exception as exc:  # an unusable directory, a file we cannot replace...
            self.disk_error = f"{type(exc).__name__}: {exc}"
            log.error("cache second tier unavailable; serving from memory only", backend=tier.backend,
                      error=self.disk_error)
            self.disk_errors += 1
            return NoTier()
        return tier

    async def _switch(self) -> None:
        """`cache.backend`, `cache.dir` or where Redis is changed: the new
        second tier is opened and serves what follows, the memory tier (a near
        cache of the old one) and the semantic index start afresh, and the
        old tier is flushed and closed."""
        async with self._switching:
            source = self._second_tier_source()
            if source == self._tier_source:
                return
            new = await self._opened(self._build_tier())
            old, self.tier = self.tier, new
            was, self._tier_source = self._tier_source, source  # `stats()["backend"]` says so
            self.memory.clear(None)
            for watcher in self.watchers:
                watcher.clear(None)
            await old.aclose()
            log.info("cache second tier switched", was=was[0], now=source[0])

    # ------------------------------------------------- what the tier says

    def invalidated(self, kind: str, arg: str) -> None:
        """Another daemon stored (put), deleted (del), indexed (vec) or
        cleared (clear) answers: our near-cache copies of them go."""
        if kind in ("put", "del"):
            self.memory.delete(arg)
            if kind == "del":
                self._forget(arg)
        elif kind == "vec":
            for watcher in self.watchers:
                watcher.indexed(arg)
        elif kind == "clear":
            namespace = None if arg == "*" else arg
            self.memory.clear(namespace)
            for watcher in self.watchers:
                watcher.clear(namespace)

    def resubscribed(self) -> None:
        """Invalidations may have been missed while unsubscribed: the near cache starts afresh."""
        self.memory.clear(None)

    def evicted(self, keys: list[str]) -> None:
        for key in keys:
            self._forget(key)

    def _forget(self, key: str) -> None:
        for watcher in self.watchers:
            watcher.forget(key)

    def failed(self, tier: SecondTier, what: str, exc: Exception, lost: bool) -> None:
        # A full disk or a broken file costs the second tier, never a request.
        self.disk_errors += 1
        self.disk_error = f"{what}: {type(exc).__name__}: {exc}"
        log.warning(f"cache disk {what} failed; serving from memory", error=f"{type(exc).__name__}: {exc}")
        if lost and tier is self.tier:  # (not one switched away from, closing)
            self.tier = NoTier()

    def recovered(self) -> None:
        self.disk_error = None  # it works again: the warning ends

    def __repr__(self) -> str:
        return (f"<ResponseCache memory={len(self.memory)} tier={self.tier!r} flights={len(self.flights)} "
                f"hits={self.hits} misses={self.misses}>")

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def hits(self) -> int:
        return self.hits_memory + self.hits_disk

    # ------------------------------------------------------------ lifecycle

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Open the second tier."""
        self._task_group = task_group
        self.tier = await self._opened(self.tier)

    # ------------------------------------------ single flight across daemons

    async def claim(self, key: str, namespace: str, deadline: float) -> MemEntry | None:
        """None when this daemon makes the upstream call for `key`, or the
        answer another daemon (on a shared tier) made meanwhile."""
        found = await self.tier.claim(key, namespace, deadline, self.clock)
        return self._promote(found) if found is not None else None

    @property
    def backend(self) -> str:
        """The second tier in use, as `cache.backend` names it (a switch takes a moment)."""
        return str(self._tier_source[0])

    @property
    def shared(self) -> bool:
        """Other daemons read and write the second tier."""
        return self.tier.shared

    async def share(self, entry: MemEntry) -> None:
        """Put a stored answer in a shared tier (awaited before its reply
        goes out, so every daemon can find it); the memory copy becomes a near
        cache whose life is bounded by the tier's `near_cache_ttl`."""
        tier = self.tier
        if not tier.shared:
            return
        now = self.clock()
        await tier.share(entry, now)
        if tier.near_cache_ttl:
            entry.expires_at = min(entry.expires_at, now + tier.near_cache_ttl)

    # -------------------------------- vectors kept beside their entries (semantic.tier.VectorStore)

    async def load_vectors(self, identity: str) -> list[StoredVector]:
        """The vectors stored by earlier runs (or other daemons) for embedder `identity`."""
        return await self.tier.load_vectors(identity, self.clock())

    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]:
        return await self.tier.get_vectors(identity, keys)

    async def keep_vector(self, row: VectorRow) -> None:
        """A new semantic-index row, kept by the second tier (for the next run, or the other
        daemons) as long as its entry."""
        entry = self.memory.get(row[0], self.clock())
        ttl = (entry.created_at + entry.ttl - self.clock()) if entry is not None else float(self.config.default_ttl)
        await self.tier.put_vector(row, ttl)

    async def aclose(self) -> None:
        """Flush pending writes and close the second tier."""
        await self.tier.aclose()

    # -------------------------------------------------------------- lookups

    def lookup_memory(self, key: str) -> MemEntry | None:
        """A memory hit (counted), or None. Never blocks."""
        now = self.clock()
        entry = self.memory.get(key, now)
        if entry is not None:
            self.hits_memory += 1
            self._count_hit(entry)
        return entry

    async def lookup(self, key: str, memory_probed: bool = False, namespace: str | None = None) -> MemEntry | None:
        """Memory (unless the caller just probed it), then disk or Redis
        (promoting a hit to memory). Counts a miss."""
        entry = None if memory_probed else self.lookup_memory(key)
        if entry is not None:
            return entry
        tier = self.tier
        found = await tier.get(key, namespace or self.config.namespace, self.clock())
        entry = self._promote(found) if found is not None else None
        if entry is None:
            self.misses += 1
            return None
        self.hits_disk += 1
        self._count_hit(entry, touch=False)
        tier.touch(entry)  # hits and access time, written back in a batch
        return entry

    def _promote(self, found: DiskHit) -> MemEntry | None:
        """A second-tier hit as a memory entry (None if expired under the current TTL settings)."""
        entry = make_entry(
            found.key, found.namespace, found.payload.response, found.payload.chunks,
            found.created_at, found.ttl, found.fixed_ttl, found.hits,
        )
        self._apply_ttl(entry)
        if entry.expires_at <= self.clock():
            return None
        if self.tier.near_cache_ttl:
            entry.expires_at = min(entry.expires_at, self.clock() + self.tier.near_cache_ttl)
        self.memory.put(entry)
        return entry

    def _count_hit(self, entry: MemEntry, touch: bool = True) -> None:
        if touch:
            entry.hits += 1
            if self.config.strategy == "smart":  # only smart lifetimes grow with hits
                self._apply_ttl(entry)
            self.tier.touch(entry)
        self.saved_input_tokens += entry.input_tokens
        self.saved_output_tokens += entry.output_tokens
        self.saved_cost_usd += self.prices.cost(entry.model, entry.input_tokens, entry.output_tokens)

    def _apply_ttl(self, entry: MemEntry) -> None:
        entry.expires_at = entry.created_at + entry_ttl(self.config, entry.ttl, entry.hits, entry.fixed_ttl)

    # -------------------------------------------------------------- storing

    def store(self, key: str, namespace: str, request: CompletionRequest, response: CompletionResponse,
              chunks: list[str] | None) -> MemEntry | None:
        """Keep a complete answer (None: not worth keeping, see `not_stored`)."""
        if not response.text and not any(b.get("type") != "text" for b in response.content):
            # An empty answer is served, but a retry should ask again.
            self.not_stored["empty"] += 1
            return None
        fixed = request.cache is not None and request.cache.ttl is not None
        ttl = base_ttl(self.config.strategy, request, float(self.config.default_ttl), float(self.config.max_ttl))
        entry = make_entry(key, namespace, response, chunks, self.clock(), ttl, fixed)
        if entry.size > self.config.max_entry_bytes:
            self.not_stored["too_large"] += 1
            log.info("answer too large to cache", size=entry.size, limit=int(self.config.max_entry_bytes))
            return None
        self.memory.put(entry)
        self.stores += 1
        self.tier.keep(entry)
        return entry

    # ---------------------------------------------------------- management

    async def clear(self, namespace: str | None = None) -> int:
        removed = self.memory.clear(namespace)
        for watcher in self.watchers:
            watcher.clear(namespace)
        removed = max(removed, await self.tier.clear(namespace))
        return removed

    async def probe(self) -> None:
        """Write to the disk tier and read back, or ping Redis (health); failures are also the tier's."""
        await self.tier.probe(self.clock())

    async def delete(self, key: str) -> bool:
        found = self.memory.delete(key)
        self._forget(key)
        found = await self.tier.delete(key) or found
        return found

    def reconfigure(self, config: CacheConfig) -> None:
        """A reloaded `cache` section. Smaller budgets evict at once; a shorter
        TTL applies to entries already stored (a longer one does not extend
        them); a new `backend` or `dir` switches the second tier (`_switch`);
        `compression` waits for the next start."""
        if config.compression != self.config.compression:
            log.warning("cache settings take effect at the next start", keys=["cache.compression"])
        self.config = config
        self.memory.resize(int(config.memory_max_bytes))
        cap = ttl_cap(self.config)
        for entry in self.memory.entries():
            if not entry.fixed_ttl:
                entry.ttl = min(entry.ttl, cap)
                entry.expires_at = min(entry.expires_at, entry.created_at + cap)
        if self._second_tier_source() != self._tier_source and self._task_group is not None:
            self._task_group.start_soon(self._switch)
        else:
            self.tier.reconfigure(config, self.redis_config)

    def reconfigure_redis(self, redis: RedisConfig) -> None:
        """A reloaded `redis` section: the bounds apply at once; a new address
        switches the second tier (see `_switch`)."""
        self.redis_config = redis
        if self._second_tier_source() != self._tier_source and self._task_group is not None:
            self._task_group.start_soon(self._switch)
        else:
            self.tier.reconfigure(self.config, redis)

    def set_prices(self, prices: dict[str, Price]) -> None:
        self.prices = PriceTable({k: msgspec.structs.asdict(v) for k, v in prices.items()})

    # --------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """`claif cache stats`: every counter, per tier (report.py)."""
        return report.stats(self)

    def status(self) -> dict[str, Any]:
        """The contract's `status.cache` block, and the disk tier's state (report.py)."""
        return report.status(self)
