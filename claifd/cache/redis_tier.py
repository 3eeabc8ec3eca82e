"""The shared second tier (`cache.backend: redis`) as a `SecondTier`: the
Redis operations are redis_store.py; here is what the daemons do together.

- An answer is in Redis before its reply goes out (`share`), so every
  daemon finds it; each daemon's memory tier is a near cache of Redis whose
  copies live at most `redis.near_cache_ttl`.
- Invalidations (put, del, vec, clear) arrive on a subscription and go to
  the cache (`TierEvents.invalidated`); a "put" also wakes this daemon's
  requests waiting for that key.
- Single flight across daemons: `claim` leases a key's upstream call to one
  daemon (`redis.lock_ttl`, renewed while the call runs); the others wait
  for its "put" and read the answer. A leader that crashes leaves a lease
  that expires; a follower then claims it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from ..config import CacheConfig, RedisConfig
from .disk import DiskHit
from .entry import Codec, MemEntry
from .redis_store import RedisStore
from .tier import StoredVector, TierEvents, VectorRow

__all__ = ["RedisTier"]


class RedisTier:
    backend = "redis"
    shared = True

    def __init__(self, client: Any, where: str, config: RedisConfig, codec: Codec) -> None:
        self.store = RedisStore(client, where, config.prefix, codec)
        self.near_cache_ttl = float(config.near_cache_ttl)
        self.lock_ttl = float(config.lock_ttl)
        self._listener: anyio.CancelScope | None = None
        self._events: TierEvents | None = None
        # Keys this daemon waits for another daemon to answer (set on its "put").
        self._remote_waits: dict[str, anyio.Event] = {}
        self.remote_coalesced = 0

    def __repr__(self) -> str:
        return f"<RedisTier {self.store.url} errors={self.store.errors}>"

    def reconfigure(self, config: CacheConfig, redis: RedisConfig | None) -> None:
        """The bounds apply at once (an address change builds a new tier);
        the size is Redis' own maxmemory (README)."""
        if redis is not None:
            self.near_cache_ttl = float(redis.near_cache_ttl)
            self.lock_ttl = float(redis.lock_ttl)

    async def open(self, task_group: anyio.abc.TaskGroup, events: TierEvents) -> None:
        self._events = events
        scope = self._listener = anyio.CancelScope()

        async def listen() -> None:
            with scope:
                await self.store.listen(self._heard, events.resubscribed)

        task_group.start_soon(listen)

    def _heard(self, kind: str, arg: str) -> None:
        if kind == "put":
            waiting = self._remote_waits.get(arg)
            if waiting is not None:
                waiting.set()
        if self._events is not None:
            self._events.invalidated(kind, arg)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        await self.store.aclose()

    async def get(self, key: str, namespace: str, now: float) -> DiskHit | None:
        return await self.store.get(key, namespace, now)

    def keep(self, entry: MemEntry) -> None:
        pass  # `share` puts it, awaited before the reply

    async def share(self, entry: MemEntry, now: float) -> None:
        await self.store.put(entry, now)

    def touch(self, entry: MemEntry) -> None:
        pass  # Redis keeps its own expiry; hit counts stay in each daemon

    async def flush(self) -> None:
        pass

    async def delete(self, key: str) -> bool:
        return await self.store.delete(key)

    async def clear(self, namespace: str | None) -> int:
        return await self.store.clear(namespace)

    async def probe(self, now: float) -> None:
        await self.store.probe()

    async def claim(self, key: str, namespace: str, deadline: float, now: Callable[[], float]) -> DiskHit | None:
        """None when this daemon makes the upstream call for `key` (it holds
        the lease, or waited as long as the request may), or the answer
        another daemon made meanwhile."""
        store = self.store
        while True:
            if await store.try_lock(key, self.lock_ttl):
                return None
            event = self._remote_waits.setdefault(key, anyio.Event())
            try:
                with anyio.move_on_after(min(0.25, max(0.0, deadline - time.monotonic()))):
                    await event.wait()  # its "put", or a look again in a moment
            finally:
                if self._remote_waits.get(key) is event:
                    del self._remote_waits[key]
            found = await store.get(key, namespace, now())
            if found is not None:
                self.remote_coalesced += 1
                return found
            if time.monotonic() >= deadline:
                return None  # waited as long as the request may: call upstream without the lease
            if not await store.locked(key):
                continue  # the leader failed or died: claim it ourselves

    async def renew(self, key: str) -> None:
        """Keep the lease on `key` while its upstream call runs."""
        while True:
            await anyio.sleep(self.lock_ttl / 3)
            await self.store.renew(key, self.lock_ttl)

    async def release(self, key: str) -> None:
        await self.store.unlock(key)

    async def load_vectors(self, identity: str, now: float) -> list[StoredVector]:
        return await self.store.load_vectors(identity)

    async def put_vector(self, row: VectorRow, ttl: float) -> None:
        await self.store.put_vector(row, max(ttl, 1.0))

    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]:
        return await self.store.get_vectors(identity, keys)

    def stats(self) -> dict[str, Any]:
        store = self.store
        return {"url": store.url, "errors": store.errors, "error": store.error, "damaged": store.damaged,
                "near_cache_ttl": self.near_cache_ttl, "coalesced_across_daemons": self.remote_coalesced}

    def entries_and_bytes(self) -> tuple[int, int]:
        return 0, 0

    def quarantined(self) -> list[Any]:
        return []
