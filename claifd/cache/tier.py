"""The cache's second tier, behind the memory LRU: one interface, a store
per file.

    DiskTier (this file)        SQLite on this machine (`cache.backend`
                                local): lookups in one worker thread, writes
                                write-behind, committed in batches
    RedisTier (redis_tier.py)   a team's daemons on one Redis (`cache.backend`
                                redis): an answer is in Redis before its reply
                                goes out, invalidations keep the near caches
                                honest, a lease per key makes one upstream
                                call for all the daemons

`ResponseCache` (service.py) talks to whichever is configured through
`SecondTier` only, and hears back through `TierEvents`. A new store is one
file implementing `SecondTier` and a line in `ResponseCache._build_tier`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from ..config import CacheConfig, RedisConfig
from ..fs import is_corruption
from .disk import DiskHit, DiskStore
from .entry import Codec, MemEntry

__all__ = ["DiskTier", "NoTier", "SecondTier", "TierEvents", "VectorRow", "build_tier"]

log = structlog.get_logger("claifd.cache")

# A semantic-index row: key, scope, namespace, prompt, embedder, vector bytes.
VectorRow = tuple[str, str, str, str, str, bytes]
StoredVector = tuple[str, str, str, str, bytes]

# How often hits seen in memory are written back to the disk tier.
TOUCH_INTERVAL = 5.0
# New entries wait this long (or until WRITE_BATCH of them are queued) so that
# one transaction in the worker thread stores many: a thread hop and a SQLite
# commit per answer cost a sequential miss ~170 us (measured), mostly in GIL
# contention with the loop. They are in memory meanwhile; a crash in that
# window costs those cache entries, never an answer.
WRITE_DELAY = 0.05
WRITE_BATCH = 256


class TierEvents(Protocol):
    """What a second tier tells the cache."""

    def invalidated(self, kind: str, arg: str) -> None:
        """Another daemon stored (put), deleted (del), indexed (vec) or cleared (clear) answers."""

    def resubscribed(self) -> None:
        """Invalidations may have been missed meanwhile."""

    def evicted(self, keys: list[str]) -> None:
        """Entries the tier dropped for room."""

    def failed(self, tier: SecondTier, what: str, exc: Exception, lost: bool) -> None:
        """An operation of `tier` failed (`lost`: it is unusable from now on)."""

    def recovered(self) -> None:
        """Writes work again after a failure."""


class SecondTier(Protocol):
    backend: str  # `cache.backend`: "local" or "redis"
    # Other daemons read and write it: stores are shared before the reply,
    # and a key's upstream call is leased (`claim`).
    shared: bool
    # How long a memory copy of its entries may live (0: as long as the entry).
    near_cache_ttl: float

    async def open(self, task_group: anyio.abc.TaskGroup, events: TierEvents) -> None: ...
    async def aclose(self) -> None: ...
    async def get(self, key: str, namespace: str, now: float) -> DiskHit | None: ...
    def keep(self, entry: MemEntry) -> None:
        """A new answer (a local tier writes it behind; a shared one has `share`)."""
    async def share(self, entry: MemEntry, now: float) -> None: ...
    def touch(self, entry: MemEntry) -> None:
        """A hit seen in memory (hit count, expiry, access time)."""
    async def flush(self) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def clear(self, namespace: str | None) -> int: ...
    async def probe(self, now: float) -> None: ...
    def reconfigure(self, config: CacheConfig, redis: RedisConfig | None) -> None:
        """New settings for the same store (its size, its bounds); a new place is a new tier."""
    async def claim(self, key: str, namespace: str, deadline: float, now: Callable[[], float]) -> DiskHit | None: ...
    async def renew(self, key: str) -> None: ...
    async def release(self, key: str) -> None: ...
    async def load_vectors(self, identity: str, now: float) -> list[StoredVector]: ...
    async def put_vector(self, row: VectorRow, ttl: float) -> None: ...
    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]: ...
    def stats(self) -> dict[str, Any]: ...
    def entries_and_bytes(self) -> tuple[int, int]: ...
    def quarantined(self) -> list[Any]: ...


class DiskTier:
    """SQLite in one worker thread (DiskStore); new answers, touched hits and
    index rows queued and committed together by a writer task. A full disk
    or a broken file costs the tier, never a request: reads fail as misses,
    a corrupt file is quarantined and recreated, and a tier that cannot
    recover is dropped (the cache serves from memory)."""

    backend = "local"
    shared = False
    near_cache_ttl = 0.0

    def __init__(self, directory: Path, max_bytes: int, codec: Codec, clock: Callable[[], float]) -> None:
        self.store = DiskStore(directory, max_bytes, codec)
        self.clock = clock
        self._events: TierEvents | None = None
        self._thread = anyio.CapacityLimiter(1)
        self._write_queue: list[MemEntry] = []
        self._touched: dict[str, MemEntry] = {}
        self._vectors: list[VectorRow] = []
        self._committing = 0  # entries of the batch being written (pending until they are in)
        self._wakeup = anyio.Event()
        self._full = anyio.Event()
        self._writer_scope: anyio.CancelScope | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<DiskTier {self.store.path} entries={self.store.entries} pending={len(self._write_queue)}>"

    @property
    def path(self) -> Path:
        return self.store.path

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._thread)

    async def open(self, task_group: anyio.abc.TaskGroup, events: TierEvents) -> None:
        self._events = events
        self._task_group = task_group
        await self._in_thread(self.store.open)
        scope = self._writer_scope = anyio.CancelScope()

        async def writer() -> None:
            with scope:
                await self._writer()

        task_group.start_soon(writer)

    async def aclose(self) -> None:
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.flush()
            await self._in_thread(self.store.close)

    async def get(self, key: str, namespace: str, now: float) -> DiskHit | None:
        if not self.store.might_contain(key):
            return None
        try:
            found: DiskHit | None = await self._in_thread(self.store.get, key, now)
            return found
        except Exception as exc:
            await self._failed("read", exc)
            return None

    def keep(self, entry: MemEntry) -> None:
        self._write_queue.append(entry)
        self._wakeup.set()
        if len(self._write_queue) >= WRITE_BATCH:
            self._full.set()

    async def share(self, entry: MemEntry, now: float) -> None:
        pass  # nobody else reads this tier

    def touch(self, entry: MemEntry) -> None:
        self._touched[entry.key] = entry

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
            await self.flush()

    async def flush(self) -> None:
        batch, self._write_queue = self._write_queue, []
        touched, self._touched = self._touched, {}
        vectors, self._vectors = self._vectors, []
        now = self.clock()
        self._committing = len(batch)
        try:
            if batch:
                await self._in_thread(self.store.put_many, batch, now)
                evicted = self.store.take_evicted()
                if evicted and self._events is not None:
                    self._events.evicted(evicted)
            if vectors:
                await self._in_thread(self.store.put_vectors, vectors)
            if touched:
                rows = [(e.key, e.hits, e.expires_at, now) for e in touched.values()]
                await self._in_thread(self.store.touch_many, rows)
        except Exception as exc:
            await self._failed("write", exc)
        else:
            if (batch or touched) and self._events is not None:
                self._events.recovered()
        finally:
            self._committing = 0

    async def _failed(self, what: str, exc: Exception) -> None:
        lost = False
        if is_corruption(exc):
            try:
                await self._in_thread(self.store.recover, f"{what}: {exc}")
            except Exception as again:
                log.error("cache disk tier unavailable; serving from memory only", error=str(again))
                lost = True
        if self._events is not None:
            self._events.failed(self, what, exc, lost)

    async def delete(self, key: str) -> bool:
        self._write_queue = [e for e in self._write_queue if e.key != key]
        self._touched.pop(key, None)
        try:
            return bool(await self._in_thread(self.store.delete, key))
        except Exception as exc:
            await self._failed("delete", exc)
            return False

    async def clear(self, namespace: str | None) -> int:
        self._write_queue = [e for e in self._write_queue if namespace is not None and e.namespace != namespace]
        try:
            return int(await self._in_thread(self.store.clear, namespace))
        except Exception as exc:
            await self._failed("clear", exc)
            return 0

    async def probe(self, now: float) -> None:
        try:
            await self._in_thread(self.store.probe, now)
        except Exception as exc:
            await self._failed("probe", exc)
            raise
        if self._events is not None:
            self._events.recovered()

    def reconfigure(self, config: CacheConfig, redis: RedisConfig | None) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(self._in_thread, self.store.resize, int(config.max_size))

    async def claim(self, key: str, namespace: str, deadline: float, now: Callable[[], float]) -> DiskHit | None:
        return None  # one daemon: its own flights coalesce

    async def renew(self, key: str) -> None:
        pass

    async def release(self, key: str) -> None:
        pass

    async def load_vectors(self, identity: str, now: float) -> list[StoredVector]:
        try:
            rows: list[StoredVector] = await self._in_thread(self.store.load_vectors, identity, now)
            return rows
        except Exception as exc:
            await self._failed("read", exc)
            return []

    async def put_vector(self, row: VectorRow, ttl: float) -> None:
        self._vectors.append(row)
        self._wakeup.set()

    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]:
        return []

    def stats(self) -> dict[str, Any]:
        store = self.store
        return {"path": str(store.path), "entries": store.entries, "bytes": store.bytes, "max_bytes": store.max_bytes,
                "evictions": store.evictions, "damaged": store.damaged,
                # Written behind and not yet in (queued, or in the batch being committed).
                "pending_writes": len(self._write_queue) + self._committing}

    def entries_and_bytes(self) -> tuple[int, int]:
        return self.store.entries, self.store.bytes

    def quarantined(self) -> list[Any]:
        return list(self.store.quarantined)


class NoTier:
    """No second tier: memory only (`cache.dir` empty, or a tier that was
    lost). Every operation is a no-op, so the cache never asks whether it
    has one."""

    backend = "local"
    shared = False
    near_cache_ttl = 0.0

    def __repr__(self) -> str:
        return "<NoTier>"

    async def open(self, task_group: anyio.abc.TaskGroup, events: TierEvents) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def get(self, key: str, namespace: str, now: float) -> DiskHit | None:
        return None

    def keep(self, entry: MemEntry) -> None:
        pass

    async def share(self, entry: MemEntry, now: float) -> None:
        pass

    def touch(self, entry: MemEntry) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def delete(self, key: str) -> bool:
        return False

    async def clear(self, namespace: str | None) -> int:
        return 0

    async def probe(self, now: float) -> None:
        pass

    def reconfigure(self, config: CacheConfig, redis: RedisConfig | None) -> None:
        pass

    async def claim(self, key: str, namespace: str, deadline: float, now: Callable[[], float]) -> DiskHit | None:
        return None

    async def renew(self, key: str) -> None:
        pass

    async def release(self, key: str) -> None:
        pass

    async def load_vectors(self, identity: str, now: float) -> list[StoredVector]:
        return []

    async def put_vector(self, row: VectorRow, ttl: float) -> None:
        pass

    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]:
        return []

    def stats(self) -> dict[str, Any]:
        return {}

    def entries_and_bytes(self) -> tuple[int, int]:
        return 0, 0

    def quarantined(self) -> list[Any]:
        return []


def build_tier(config: CacheConfig, redis: RedisConfig | None, clock: Callable[[], float]) -> SecondTier:
    """The second tier the configuration asks for (nothing opened yet)."""
    try:
        codec = Codec(config.compression)
    except ValueError as exc:
        log.warning("cache compression unavailable; using zlib", error=str(exc))
        codec = Codec("zlib")
    if config.backend == "redis" and redis is not None:
        from ..redis_client import describe, make_client  # imports redis-py: only when configured
        from .redis_tier import RedisTier

        return RedisTier(make_client(redis), describe(redis), redis, codec)
    if config.dir:
        return DiskTier(Path(config.dir).expanduser(), int(config.max_size), codec, clock)
    return NoTier()
