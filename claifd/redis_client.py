"""The daemon's Redis client, as `redis.*` says (the `redis` extra: imported
only when a backend uses Redis).

A single Redis (`redis.url`: redis://, rediss://, unix://), the master of a
Sentinel-managed replica set (`redis.sentinels`: ["host:port", ...] and
`redis.service_name`; redis-py follows it across failovers), or a Redis
Cluster (`redis.cluster`: `redis.url` names one node). The key layout is
Cluster-safe: every transaction touches one slot (a session's two keys share
a hash tag), everything else is single-key or non-transactional.
"""

from __future__ import annotations

from typing import Any

from .config import RedisConfig

__all__ = ["make_client", "describe", "connection_key", "store_source"]


def connection_key(config: RedisConfig) -> tuple[Any, ...]:
    """What a client is built from: a change to any of it means a new client."""
    return (config.url, tuple(config.sentinels), config.service_name, config.cluster, config.prefix,
            config.max_connections, float(config.timeout))


def store_source(backend: str, redis: RedisConfig | None, directory: str) -> tuple[Any, ...]:
    """Where a store (the cache's second tier, the sessions) lives: on Redis
    or in a local directory. A change to it means a new store."""
    if backend == "redis" and redis is not None:
        return ("redis", *connection_key(redis))
    return ("local", directory)


def make_client(config: RedisConfig) -> Any:
    """A `redis.asyncio.Redis` with a bounded pool and short timeouts."""
    import redis.asyncio as aioredis

    timeout = float(config.timeout)
    if config.sentinels:
        from redis.asyncio.sentinel import Sentinel

        hosts = []
        for item in config.sentinels:
            host, _, port = item.rpartition(":")
            hosts.append((host.strip("[]") or "127.0.0.1", int(port)))
        sentinel = Sentinel(hosts, socket_timeout=timeout, socket_connect_timeout=timeout)
        return sentinel.master_for(config.service_name, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   max_connections=config.max_connections)
    if config.cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(config.url, max_connections=config.max_connections, socket_timeout=timeout,
                                     socket_connect_timeout=timeout)
    return aioredis.Redis.from_url(config.url, max_connections=config.max_connections, socket_timeout=timeout,
                                   socket_connect_timeout=timeout, retry_on_timeout=False)


def describe(config: RedisConfig) -> str:
    """Where the daemon's Redis is, without secrets (status, logs)."""
    if config.sentinels:
        return f"sentinel {config.service_name} via {', '.join(config.sentinels)}"
    from .redaction import redact_url

    return redact_url(config.url)
