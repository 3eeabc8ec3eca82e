"""The shared second tier on Redis (`cache.backend: redis`): what one daemon
stores, every daemon on the same Redis finds.

    key     {prefix}e:{namespace}:{cache key}   (a prefix per namespace: clear is a SCAN)
    value   msgpack [created_at, ttl, fixed_ttl, hits, checksum, blob]; blob as on disk (compressed)
    expiry  Redis' own (PX = the entry's remaining lifetime)
    vector  {prefix}v:{embedder}:{cache key} -> msgpack [scope, namespace, prompt, float32 bytes], same expiry
    channel {prefix}invalidate: "put|del|vec ORIGIN KEY", "clear ORIGIN NAMESPACE|*" (a daemon ignores its own)

Each daemon's memory tier stays in front as a near cache. It is kept
honest two ways: every store, delete and clear is published and each daemon
drops what it heard about from its memory; and a near-cache copy lives at
most `redis.near_cache_ttl` seconds (default 30) before it is read from
Redis again, which bounds staleness when a message is lost (a subscription
that reconnects also empties the near cache).

Redis down: lookups are misses, stores stay in memory only, both counted in
`errors` and shown by health; redis-py reconnects by itself on the next
command. Size is Redis' business: set `maxmemory` and
`maxmemory-policy allkeys-lru` (README).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog

from .disk import DiskHit
from .entry import Codec, DamagedEntry, MemEntry

__all__ = ["RedisStore"]

log = structlog.get_logger("claifd.cache.redis")


class _Record(msgspec.Struct, array_like=True):
    namespace: str
    created_at: float
    ttl: float
    fixed_ttl: bool
    hits: int
    checksum: int
    blob: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode
_encode_vector = msgspec.msgpack.Encoder().encode
_decode_vector = msgspec.msgpack.Decoder(tuple[str, str, str, bytes]).decode


class RedisStore:
    def __init__(self, client: Any, where: str, prefix: str, codec: Codec) -> None:
        self.url = where  # where Redis is, for status (no secrets)
        self.prefix = prefix
        self.codec = codec
        self.client = client
        self.channel = f"{prefix}invalidate"
        # Who published: a daemon ignores its own messages.
        self.origin = secrets.token_hex(6)
        self.errors = 0
        self.error: str | None = None
        self.damaged = 0

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} errors={self.errors}>"

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}e:{namespace}:{key}"

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        message = f"{type(exc).__name__}: {exc}"
        if message != self.error:
            log.warning("redis unavailable; serving without the shared cache", during=what, error=message)
        self.error = message

    def _ok(self) -> None:
        if self.error is not None:
            log.info("redis reachable again")
        self.error = None

    async def get(self, key: str, namespace: str, now: float) -> DiskHit | None:
        try:
            raw = await self.client.get(self._key(namespace, key))
        except Exception as exc:  # redis.RedisError and OS errors alike: a miss
            self._failed("read", exc)
            return None
        self._ok()
        if raw is None:
            return None
        try:
            record = _decode(raw if isinstance(raw, bytes) else raw.encode())
            payload = self.codec.decode(record.blob, record.checksum)
        except (msgspec.DecodeError, DamagedEntry) as exc:
            self.damaged += 1
            log.warning("damaged shared cache entry ignored", key=key[:16], error=str(exc))
            return None
        return DiskHit(key, record.namespace, record.created_at, record.ttl, record.fixed_ttl, record.hits + 1,
                       payload)

    async def put(self, entry: MemEntry, now: float) -> bool:
        """Store `entry` (with Redis expiry) and tell the other daemons."""
        remaining = entry.expires_at - now
        if remaining <= 0:
            return False
        blob, checksum = self.codec.encode(entry)
        record = _Record(entry.namespace, entry.created_at, entry.ttl, entry.fixed_ttl, entry.hits, checksum, blob)
        try:  # two commands: Cluster refuses PUBLISH in a pipeline
            await self.client.set(self._key(entry.namespace, entry.key), _encode(record),
                                  px=max(1, int(remaining * 1000)))
            await self.client.publish(self.channel, f"put {self.origin} {entry.key}")
        except Exception as exc:
            self._failed("write", exc)
            return False
        self._ok()
        return True

    # ----------------------------------------------------------- vectors

    def _vector(self, identity: str, key: str) -> str:
        return f"{self.prefix}v:{identity}:{key}"

    async def put_vector(self, row: tuple[str, str, str, str, str, bytes], ttl: float) -> None:
        """A semantic-index row (key, scope, namespace, prompt, embedder, vector),
        living as long as its entry, announced to the other daemons."""
        key, scope, namespace, prompt, identity, vector = row
        try:
            await self.client.set(self._vector(identity, key), _encode_vector((scope, namespace, prompt, vector)),
                                  px=max(1, int(ttl * 1000)))
            await self.client.publish(self.channel, f"vec {self.origin} {key}")
        except Exception as exc:
            self._failed("write", exc)
            return
        self._ok()

    async def get_vectors(self, identity: str, keys: list[str]) -> list[tuple[str, str, str, str, bytes]]:
        """Rows (key, scope, namespace, prompt, vector) of `keys` still stored."""
        if not keys:
            return []
        try:
            raws = await self.client.mget([self._vector(identity, k) for k in keys])
        except Exception as exc:
            self._failed("read", exc)
            return []
        rows = []
        for key, raw in zip(keys, raws):
            if raw is not None:
                try:
                    scope, namespace, prompt, vector = _decode_vector(raw if isinstance(raw, bytes) else raw.encode())
                except (msgspec.DecodeError, ValueError, TypeError):
                    self.damaged += 1
                    continue
                rows.append((key, scope, namespace, prompt, vector))
        return rows

    async def load_vectors(self, identity: str) -> list[tuple[str, str, str, str, bytes]]:
        """Every stored row of embedder `identity` (start-up)."""
        start = len(self._vector(identity, ""))
        keys: list[str] = []
        try:
            async for name in self.client.scan_iter(match=self._vector(identity, "*"), count=1000):
                keys.append((name.decode() if isinstance(name, bytes) else str(name))[start:])
        except Exception as exc:
            self._failed("read", exc)
            return []
        rows = []
        for i in range(0, len(keys), 1000):
            rows.extend(await self.get_vectors(identity, keys[i:i + 1000]))
        return rows

    # ----------------------------------------------------- single-flight

    def _lock(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    async def try_lock(self, key: str, ttl: float) -> bool:
        """Claim the upstream call for `key` across daemons (a lease of `ttl`
        seconds, renewed by `renew` while the call runs). Redis down: True
        (each daemon calls upstream on its own)."""
        try:
            got = await self.client.set(self._lock(key), self.origin, nx=True, px=max(1, int(ttl * 1000)))
        except Exception as exc:
            self._failed("lock", exc)
            return True
        self._ok()
        return bool(got)

    async def renew(self, key: str, ttl: float) -> None:
        try:
            await self.client.pexpire(self._lock(key), max(1, int(ttl * 1000)))
        except Exception as exc:
            self._failed("lock", exc)

    async def locked(self, key: str) -> bool:
        try:
            return bool(await self.client.exists(self._lock(key)))
        except Exception as exc:
            self._failed("lock", exc)
            return False

    async def unlock(self, key: str) -> None:
        try:
            await self.client.delete(self._lock(key))
        except Exception as exc:
            self._failed("unlock", exc)

    async def _scan_delete(self, pattern: str) -> int:
        names = [name async for name in self.client.scan_iter(match=pattern, count=500)]
        removed = 0
        for start in range(0, len(names), 500):  # (redis-py splits a Cluster's UNLINK by slot)
            removed += int(await self.client.unlink(*names[start:start + 500]))
        return removed

    async def delete(self, key: str) -> bool:
        try:
            removed = await self._scan_delete(f"{self.prefix}e:*:{key}")
            await self.client.publish(self.channel, f"del {self.origin} {key}")
        except Exception as exc:
            self._failed("delete", exc)
            raise
        self._ok()
        return removed > 0

    async def clear(self, namespace: str | None) -> int:
        try:
            removed = await self._scan_delete(f"{self.prefix}e:{namespace if namespace is not None else '*'}:*")
            await self.client.publish(self.channel, f"clear {self.origin} {namespace if namespace is not None else '*'}")
        except Exception as exc:
            self._failed("clear", exc)
            raise
        self._ok()
        return removed

    async def probe(self) -> None:
        try:
            await self.client.ping()
        except Exception as exc:
            self._failed("probe", exc)
            raise
        self._ok()

    async def listen(self, on_message: Callable[[str, str], None], on_reconnect: Callable[[], None]) -> None:
        """Apply the other daemons' invalidations for as long as the daemon runs."""
        while True:
            try:
                await self.client.ping()  # a Cluster client learns its slots map before it can subscribe
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                on_reconnect()  # whatever was missed while unsubscribed: start afresh
                try:
                    async for message in pubsub.listen():
                        data = message.get("data")
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        kind, origin, arg = (text.split(" ", 2) + ["", ""])[:3]
                        if origin != self.origin:
                            on_message(kind, arg)
                finally:
                    await pubsub.aclose()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                self._failed("subscribe", exc)
                await anyio.sleep(0.5)

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except Exception:
            pass
