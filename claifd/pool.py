"""The daemon's one HTTP connection pool to the providers.

Every upstream request from every client goes through the `httpx.AsyncClient`
this object owns: connections are kept alive and reused across clients. It is
created at start-up and closed at shutdown by the app.
"""

from __future__ import annotations

import httpx

from .config import PoolConfig

__all__ = ["HttpPool", "build_client"]


def build_client(config: PoolConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_keepalive,
            keepalive_expiry=float(config.keepalive_expiry),
        ),
        timeout=httpx.Timeout(
            connect=float(config.connect_timeout),
            read=float(config.read_timeout),
            write=float(config.write_timeout),
            pool=float(config.pool_timeout),
        ),
        # Redirects are never part of these APIs; following one could send the
        # key to another host.
        follow_redirects=False,
    )


class HttpPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.client = build_client(config)

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        c = self.config
        return f"<HttpPool max_connections={c.max_connections} max_keepalive={c.max_keepalive}>"
