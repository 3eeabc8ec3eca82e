"""The cache requests of the socket protocol, registered in the dispatch table
(a cached completion is answered by `completions.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from claif_client.protocol import CacheClear, CacheDelete, CacheStats, Result

from ..dispatch import Conn, Dispatch
from .service import ResponseCache

__all__ = ["register"]


def register(dispatch: Dispatch, cache: ResponseCache, stats: Callable[[], dict[str, Any]]) -> None:
    """`stats`: the cache's figures with the semantic cache's beside them (the app's)."""

    async def clear(msg: CacheClear, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value={"removed": await cache.clear(msg.namespace)})

    async def delete(msg: CacheDelete, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value={"deleted": await cache.delete(msg.key)})

    dispatch.inline(CacheStats, lambda msg, conn: Result(id=msg.id, value=stats()))
    dispatch.task(CacheClear, clear)
    dispatch.task(CacheDelete, delete)
