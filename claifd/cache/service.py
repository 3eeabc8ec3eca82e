"""The response cache as the daemon uses it: tiers, TTLs, single-flight, stats.

The memory tier is consulted synchronously (the server answers memory hits
inside `data_received`, without a task). Everything that touches SQLite runs
in one worker thread: lookups on a memory miss are awaited; writes are
write-behind, queued and committed in batches by a writer task, so storing an
answer never delays the reply. Hits seen in memory are written back to the
disk tier (hit counts, expiry, last access) by the same writer.

Only complete successful responses are stored: the providers raise on any
error and on a stream that ended early, so a response object exists only
for a complete answer, and a cancelled call produces none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..config import CacheConfig, Price, RedisConfig
from ..fs import is_corruption
from ..redis_client import store_source
from .disk import DiskHit, DiskStore
from .entry import Codec, MemEntry, make_entry
from .flight import Flight
from .memory import MemoryLRU
from .policy import base_ttl, effective_ttl
from .prices import PriceTable

if TYPE_CHECKING:
    from ..semantic.embed import RemoteEmbed
    from ..semantic.tier import SemanticTier
    from .redis_store import RedisStore

__all__ = ["ResponseCache"]

log = structlog.get_logger("claifd.cache")

# `on_delta` for a streamed call, None for a plain one.

# How often hits seen in memory are written back to the disk tier.
TOUCH_INTERVAL = 5.0
# New entries wait this long (or until WRITE_BATCH of them are queued) so that
# one transaction in the worker thread stores many: a thread hop and a SQLite
# commit per answer cost a sequential miss ~170 us (measured), mostly in GIL
# contention with the loop. They are in memory meanwhile; a crash in that
# window costs those cache entries, never an answer.
WRITE_DELAY = 0.05
WRITE_BATCH = 256


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
        self.prices = PriceTable({k: {"input": v.input, "output": v.output} for k, v in (prices or {}).items()})
        self.memory = MemoryLRU(int(config.memory_max_bytes))
        self.disk: DiskStore | None = None
        # The shared second tier (cache.backend = redis), instead of the disk tier.
        self.shared: RedisStore | None = None
        self.redis_config = redis
        self.near_cache_ttl = float(redis.near_cache_ttl) if redis is not None else 0.0
        self.lock_ttl = float(redis.lock_ttl) if redis is not None else 10.0
        # What the second tier was built from (a change rebuilds it: `_switch`).
        self._tier_source = self._second_tier_source()
        self._listener: anyio.CancelScope | None = None
        self._switching = anyio.Lock()
        # Keys this daemon waits for another daemon to answer (set on its "put").
        self._remote_waits: dict[str, anyio.Event] = {}
        self.remote_coalesced = 0
        self._build_second_tier()
        self.flights: dict[str, Flight] = {}
        self.hits_memory = 0
        self.hits_disk = 0
        self.misses = 0
        self.coalesced = 0
        self.stores = 0
        self.disk_errors = 0
        # The last disk failure, for health and status; cleared by a success.
        self.disk_error: str | None = None
        self.not_stored = {"empty": 0, "too_large": 0}
        self.saved_input_tokens = 0
        self.saved_output_tokens = 0
        self.saved_cost_usd = 0.0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._thread = anyio.CapacityLimiter(1)
        self._write_queue: list[MemEntry] = []
        self._touched: dict[str, MemEntry] = {}
        self._wakeup = anyio.Event()
        self._full = anyio.Event()
        # The semantic tier: built on first use (it imports numpy).
        self._semantic: SemanticTier | None = None
        # How the openai embedder reaches /v1/embeddings (set by the app: the openai provider).
        self.remote_embed: RemoteEmbed | None = None
        self._vectors: list[tuple[str, str, str, str, str, bytes]] = []

    def _codec(self) -> Codec:
        try:
            return Codec(self.config.compression)
        except ValueError as exc:
            log.warning("cache compression unavailable; using zlib", error=str(exc))
            return Codec("zlib")

    def _second_tier_source(self) -> tuple[Any, ...]:
        return store_source(self.config.backend, self.redis_config, self.config.dir)

    def _build_second_tier(self) -> None:
        """The disk tier or the Redis client, as the configuration says (nothing opened yet)."""
        redis = self.redis_config
        if self.config.backend == "redis" and redis is not None:
            from ..redis_client import describe, make_client  # imports redis-py: only when configured
            from .redis_store import RedisStore

            self.shared = RedisStore(make_client(redis), describe(redis), redis.prefix, self._codec())
        elif self.config.dir:
            self.disk = DiskStore(Path(self.config.dir).expanduser(), int(self.config.max_size), self._codec())

    async def _open_second_tier(self) -> None:
        if self.disk is not None:
            try:
                await self._in_thread(self.disk.open)
            except Exception as exc:  # an unusable directory, a file we cannot replace...
                self.disk_error = f"{type(exc).__name__}: {exc}"
                log.error("cache disk tier unavailable; serving from memory only",
                          path=str(self.disk.path), error=self.disk_error)
                self.disk = None
                self.disk_errors += 1
        if self.shared is not None and self._task_group is not None:
            scope = self._listener = anyio.CancelScope()
            shared = self.shared

            async def listen() -> None:
                with scope:
                    await shared.listen(self._invalidated, self._resubscribed)

            self._task_group.start_soon(listen)

    async def _switch(self) -> None:
        """`cache.backend`, `cache.dir` or where Redis is changed: the old second
        tier is flushed and closed, the new one opened; the memory tier (a near
        cache of the old one) and the semantic index start afresh."""
        async with self._switching:
            source = self._second_tier_source()
            if source == self._tier_source:
                return
            old = self._tier_source
            await self._flush()
            if self._listener is not None:
                self._listener.cancel()
                self._listener = None
            if self.disk is not None:
                with anyio.CancelScope(shield=True):
                    await self._in_thread(self.disk.close)
            if self.shared is not None:
                await self.shared.aclose()
            self.disk = self.shared = None
            self.memory.clear(None)
            if self._semantic is not None:
                self._semantic.clear(None)
            self._build_second_tier()
            await self._open_second_tier()
            self._tier_source = source  # `stats()["backend"]` says so once the new tier serves
            log.info("cache second tier switched", was=old[0], now=source[0])

    def __repr__(self) -> str:
        return (
            f"<ResponseCache memory={len(self.memory)} disk={self.disk.entries if self.disk else '-'} "
            f"flights={len(self.flights)} hits={self.hits} misses={self.misses}>"
        )

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def hits(self) -> int:
        return self.hits_memory + self.hits_disk

    # ------------------------------------------------------------ lifecycle

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Open the disk tier (in the worker thread) and start the writer."""
        self._task_group = task_group
        await self._open_second_tier()
        task_group.start_soon(self._writer)
        if self.config.semantic.enabled or self.config.semantic.namespaces:
            await (await self.load_semantic()).ready()

    async def load_semantic(self) -> SemanticTier:
        """The semantic tier, built on first use (its embedder and stored
        vectors load at its first `ready()`)."""
        if self._semantic is None:
            from ..semantic.tier import SemanticTier  # imports numpy: only when wanted

            self._semantic = SemanticTier(self.config.semantic, self, self.remote_embed)
        return self._semantic

    def _invalidated(self, kind: str, arg: str) -> None:
        """Another daemon stored (put), deleted (del) or cleared (clear) answers:
        our near-cache copies of them go."""
        if kind in ("put", "del"):
            self.memory.delete(arg)
            waiting = self._remote_waits.get(arg)
            if waiting is not None:
                waiting.set()
            if kind == "del" and self._semantic is not None:
                self._semantic.forget(arg)
        elif kind == "vec" and self._semantic is not None and self._task_group is not None:
            self._task_group.start_soon(self._fetch_vector, arg)
        elif kind == "clear":
            namespace = None if arg == "*" else arg
            self.memory.clear(namespace)
            if self._semantic is not None:
                self._semantic.clear(namespace)

    def _resubscribed(self) -> None:
        """Invalidations may have been missed while unsubscribed: the near cache starts afresh."""
        self.memory.clear(None)

    async def claim(self, key: str, namespace: str, deadline: float) -> MemEntry | None:
        """Single-flight across daemons: None when this daemon makes the
        upstream call for `key` (it holds the lease), or the answer another
        daemon made meanwhile. A leader that crashes leaves a lease that
        expires within `redis.lock_ttl`; its followers then claim it."""
        shared = self.shared
        assert shared is not None
        while True:
            if await shared.try_lock(key, self.lock_ttl):
                return None
            event = self._remote_waits.setdefault(key, anyio.Event())
            try:
                with anyio.move_on_after(min(0.25, max(0.0, deadline - time.monotonic()))):
                    await event.wait()  # its "put", or a look again in a moment
            finally:
                if self._remote_waits.get(key) is event:
                    del self._remote_waits[key]
            found = await shared.get(key, namespace, self.clock())
            if found is not None:
                self.remote_coalesced += 1
                return self._promote(found)
            if time.monotonic() >= deadline:
                return None  # waited as long as the request may: call upstream without the lease
            if not await shared.locked(key):
                continue  # the leader failed or died: claim it ourselves

    async def renew(self, key: str) -> None:
        """Keep the lease on `key` while its upstream call runs."""
        assert self.shared is not None
        while True:
            await anyio.sleep(self.lock_ttl / 3)
            await self.shared.renew(key, self.lock_ttl)

    async def release(self, key: str) -> None:
        if self.shared is not None:
            await self.shared.unlock(key)

    async def share(self, entry: MemEntry) -> None:
        """Put a stored answer in the shared tier (awaited before its reply
        goes out, so every daemon can find it); the memory copy becomes a near
        cache whose life is bounded by `redis.near_cache_ttl`."""
        if self.shared is None:
            return
        now = self.clock()
        await self.shared.put(entry, now)
        if self.near_cache_ttl:
            entry.expires_at = min(entry.expires_at, now + self.near_cache_ttl)

    @property
    def task_group(self) -> anyio.abc.TaskGroup | None:
        """Where the cache's background work runs (None before `start`)."""
        return self._task_group

    @property
    def semantic(self) -> SemanticTier | None:
        """The semantic tier, if it has been wanted yet."""
        return self._semantic

    async def _warm_semantic(self) -> None:
        await (await self.load_semantic()).ready()

    async def load_vectors(self, tier: SemanticTier, identity: str) -> None:
        """Put the vectors stored by earlier runs for embedder `identity` into the tier's index."""
        if self.shared is not None:
            await tier.load(await self.shared.load_vectors(identity))
        elif self.disk is not None:
            try:
                await tier.load(await self._in_thread(self.disk.load_vectors, identity, self.clock()))
            except Exception as exc:
                await self._disk_failed("read", exc)

    def semantic_wanted(self, request: CompletionRequest, namespace: str) -> bool:
        """On for this request: its own `cache.semantic`, else its namespace
        in `cache.semantic.namespaces`, else `cache.semantic.enabled`."""
        control = request.cache
        if control is not None and control.semantic is not None:
            return control.semantic
        semantic = self.config.semantic
        return bool(semantic.enabled) or namespace in semantic.namespaces

    async def share_vector(self, row: tuple[str, str, str, str, str, bytes]) -> None:
        """A new semantic-index row, for the other daemons (shared backend), or queued for the disk."""
        if self.shared is None:
            self.queue_vector(row)
            return
        entry = self.memory.get(row[0], self.clock())
        ttl = (entry.created_at + entry.ttl - self.clock()) if entry is not None else float(self.config.default_ttl)
        await self.shared.put_vector(row, max(ttl, 1.0))

    async def _fetch_vector(self, key: str) -> None:
        """Another daemon indexed `key`: put it in ours."""
        tier = self._semantic
        if tier is None or tier.embedder is None or self.shared is None:
            return
        await tier.load(await self.shared.get_vectors(tier.embedder.identity, [key]), announce=False)

    def queue_vector(self, row: tuple[str, str, str, str, str, bytes]) -> None:
        if self.disk is not None:
            self._vectors.append(row)
            self._wakeup.set()

    async def aclose(self) -> None:
        """Flush pending writes and close the disk tier (and the Redis client)."""
        if self.shared is not None:
            await self.shared.aclose()
        await self._flush()
        if self.disk is not None:
            await self._in_thread(self.disk.close)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._thread)

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
        found: DiskHit | None = None
        if self.shared is not None:
            found = await self.shared.get(key, namespace or self.config.namespace, self.clock())
        elif self.disk is not None and self.disk.might_contain(key):
            try:
                found = await self._in_thread(self.disk.get, key, self.clock())
            except Exception as exc:
                await self._disk_failed("read", exc)
                found = None
        entry = self._promote(found) if found is not None else None
        if entry is None:
            self.misses += 1
            return None
        self.hits_disk += 1
        self._count_hit(entry, touch=False)
        if self.disk is not None:
            self._touched[entry.key] = entry  # hits and access time, written back in a batch
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
        if self.shared is not None and self.near_cache_ttl:
            entry.expires_at = min(entry.expires_at, self.clock() + self.near_cache_ttl)
        self.memory.put(entry)
        return entry

    def _count_hit(self, entry: MemEntry, touch: bool = True) -> None:
        if touch:
            entry.hits += 1
            if self.config.strategy == "smart":  # only smart lifetimes grow with hits
                self._apply_ttl(entry)
            self._touched[entry.key] = entry
        self.saved_input_tokens += entry.input_tokens
        self.saved_output_tokens += entry.output_tokens
        self.saved_cost_usd += self.prices.cost(entry.model, entry.input_tokens, entry.output_tokens)

    def _apply_ttl(self, entry: MemEntry) -> None:
        ttl = effective_ttl(self.config.strategy, entry.ttl, entry.hits, float(self.config.max_ttl), entry.fixed_ttl)
        if not entry.fixed_ttl:
            ttl = min(ttl, self._ttl_cap())
        entry.expires_at = entry.created_at + ttl

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
        if self.disk is not None:
            self._write_queue.append(entry)
            self._wakeup.set()
            if len(self._write_queue) >= WRITE_BATCH:
                self._full.set()
        return entry

    async def _writer(self) -> None:
        """Commit queued entries and touched hit counts, in batches, off the loop."""
        while True:
            with anyio.move_on_after(TOUCH_INTERVAL):
                await self._wakeup.wait()
            if self._write_queue and len(self._write_queue) < WRITE_BATCH:
                with anyio.move_on_after(WRITE_DELAY):
                    await self._full.wait()
            self._wakeup = anyio.Event()
            self._full = anyio.Event()
            await self._flush()

    async def _flush(self) -> None:
        if self.disk is None:
            self._write_queue.clear()
            self._touched.clear()
            self._vectors.clear()
            return
        batch, self._write_queue = self._write_queue, []
        touched, self._touched = self._touched, {}
        vectors, self._vectors = self._vectors, []
        now = self.clock()
        try:
            if batch:
                await self._in_thread(self.disk.put_many, batch, now)
                evicted = self.disk.take_evicted()
                if self._semantic is not None:
                    for key in evicted:
                        self._semantic.forget(key)
            if vectors:
                await self._in_thread(self.disk.put_vectors, vectors)
            if touched:
                rows = [(e.key, e.hits, e.expires_at, now) for e in touched.values()]
                await self._in_thread(self.disk.touch_many, rows)
        except Exception as exc:
            await self._disk_failed("write", exc)
        else:
            if batch or touched:
                self.disk_error = None  # writes work again: the warning ends

    async def _disk_failed(self, what: str, exc: Exception) -> None:
        # A full disk or a broken file costs the disk tier, never a request.
        self.disk_errors += 1
        self.disk_error = f"{what}: {type(exc).__name__}: {exc}"
        log.warning(f"cache disk {what} failed; serving from memory", error=f"{type(exc).__name__}: {exc}")
        if is_corruption(exc) and self.disk is not None:
            try:
                await self._in_thread(self.disk.recover, f"{what}: {exc}")
            except Exception as again:
                log.error("cache disk tier unavailable; serving from memory only", error=str(again))
                self.disk = None

    # ------------------------------------------------------- single-flight

    def join(self, key: str, streaming: bool) -> tuple[Flight, bool]:
        """The flight for `key`, and whether the caller leads it: an existing
        one (coalesced), or a new one that the caller must fly and `land`."""
        flight = self.flights.get(key)
        # A flight whose last subscriber just left is cancelled but may not
        # have landed yet: a newcomer starts a fresh one instead of joining it.
        if flight is not None and not flight.scope.cancel_called:
            self.coalesced += 1
            return flight, False
        flight = Flight(key, streaming)
        self.flights[key] = flight
        return flight, True

    def land(self, flight: Flight) -> None:
        """The flight's call is over: later requests start their own (or hit the store)."""
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]

    # ---------------------------------------------------------- management

    async def clear(self, namespace: str | None = None) -> int:
        removed = self.memory.clear(namespace)
        if self._semantic is not None:
            self._semantic.clear(namespace)
        self._write_queue = [e for e in self._write_queue if namespace is not None and e.namespace != namespace]
        if self.disk is not None:
            try:
                removed = max(removed, await self._in_thread(self.disk.clear, namespace))
            except Exception as exc:
                await self._disk_failed("clear", exc)
        if self.shared is not None:
            removed = max(removed, await self.shared.clear(namespace))
        return removed

    async def probe(self) -> None:
        """Write to the disk tier and read back, or ping Redis (health); failures are also the tier's."""
        if self.shared is not None:
            await self.shared.probe()
            return
        if self.disk is None:
            return
        try:
            await self._in_thread(self.disk.probe, self.clock())
        except Exception as exc:
            await self._disk_failed("probe", exc)
            raise
        self.disk_error = None

    async def delete(self, key: str) -> bool:
        found = self.memory.delete(key)
        if self._semantic is not None:
            self._semantic.forget(key)
        self._write_queue = [e for e in self._write_queue if e.key != key]
        self._touched.pop(key, None)
        if self.disk is not None:
            try:
                found = await self._in_thread(self.disk.delete, key) or found
            except Exception as exc:
                await self._disk_failed("delete", exc)
        if self.shared is not None:
            found = await self.shared.delete(key) or found
        return found

    def reconfigure(self, config: CacheConfig) -> None:
        """A reloaded `cache` section. Smaller budgets evict at once; a shorter
        TTL applies to entries already stored (a longer one does not extend
        them); a new `backend` or `dir` switches the second tier (`_switch`);
        `compression` waits for the next start."""
        if config.compression != self.config.compression:
            log.warning("cache settings take effect at the next start", keys=["cache.compression"])
        self.config = config
        if self._semantic is not None:
            self._semantic.reconfigure(config.semantic)
        elif (config.semantic.enabled or config.semantic.namespaces) and self._task_group is not None:
            self._task_group.start_soon(self._warm_semantic)  # turned on: its index loads now, not at first use
        self.memory.resize(int(config.memory_max_bytes))
        cap = self._ttl_cap()
        for entry in self.memory.entries():
            if not entry.fixed_ttl:
                entry.ttl = min(entry.ttl, cap)
                entry.expires_at = min(entry.expires_at, entry.created_at + cap)
        if self._second_tier_source() != self._tier_source and self._task_group is not None:
            self._task_group.start_soon(self._switch)
        elif self.disk is not None and self._task_group is not None:
            self._task_group.start_soon(self._in_thread, self.disk.resize, int(config.max_size))

    def reconfigure_redis(self, redis: RedisConfig) -> None:
        """A reloaded `redis` section: the bounds apply at once; a new address
        switches the second tier (see `_switch`)."""
        self.redis_config = redis
        self.near_cache_ttl = float(redis.near_cache_ttl)
        self.lock_ttl = float(redis.lock_ttl)
        if self._second_tier_source() != self._tier_source and self._task_group is not None:
            self._task_group.start_soon(self._switch)

    def set_prices(self, prices: dict[str, Price]) -> None:
        self.prices = PriceTable({k: {"input": v.input, "output": v.output} for k, v in prices.items()})

    def _ttl_cap(self) -> float:
        """The longest a non-fixed entry may live under the current config."""
        if self.config.strategy == "conservative":
            return float(self.config.default_ttl)
        return float(self.config.max_ttl)

    # --------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        disk = self.disk
        return {
            "enabled": self.config.enabled,
            "strategy": self.config.strategy,
            "hits": self.hits,
            "hits_memory": self.hits_memory,
            "hits_disk": self.hits_disk,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
            "coalesced": self.coalesced,
            "stores": self.stores,
            "not_stored": dict(self.not_stored),
            "in_flight": len(self.flights),
            "memory": {
                "entries": len(self.memory), "bytes": self.memory.bytes, "max_bytes": self.memory.max_bytes,
                "evictions": self.memory.evictions, "expired": self.memory.expirations,
            },
            "disk": None if disk is None else {
                "path": str(disk.path), "entries": disk.entries, "bytes": disk.bytes, "max_bytes": disk.max_bytes,
                "evictions": disk.evictions, "damaged": disk.damaged, "errors": self.disk_errors,
                "pending_writes": len(self._write_queue),
            },
            "backend": self._tier_source[0],
            "shared": None if self.shared is None else {
                "url": self.shared.url, "errors": self.shared.errors, "error": self.shared.error,
                "damaged": self.shared.damaged, "near_cache_ttl": self.near_cache_ttl,
                "coalesced_across_daemons": self.remote_coalesced,
            },
            "semantic": self._semantic.stats() if self._semantic is not None else {
                "enabled": bool(self.config.semantic.enabled), "indexed": 0, "lookups": 0, "hits": 0},
            "saved": {
                "input_tokens": self.saved_input_tokens,
                "output_tokens": self.saved_output_tokens,
                "cost_usd": round(self.saved_cost_usd, 6),
            },
        }

    def status(self) -> dict[str, Any]:
        """The contract's `status.cache` block, and the disk tier's state."""
        disk = self.disk
        if not self.config.enabled:
            tier = "disabled"
        elif disk is None:
            tier = "unavailable" if self.config.dir else "memory-only"
        else:
            tier = "ok"
        return {
            "hits": self.hits,
            "misses": self.misses,
            "coalesced": self.coalesced,
            # Answers stored a moment ago are in memory before the write-behind
            # reaches the disk: never report fewer than memory holds.
            "entries": max(disk.entries, len(self.memory)) if disk is not None else len(self.memory),
            "bytes": self.memory.bytes + (disk.bytes if disk is not None else 0),
            "disk_tier": tier,
            "disk_errors": self.disk_errors,
            # The last disk failure while it lasts (None once writes work again).
            "disk_error": self.disk_error,
            "quarantined": list(disk.quarantined) if disk is not None else [],
        }
