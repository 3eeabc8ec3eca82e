"""The daemon's one HTTP connection pool to the providers.

Every upstream request from every client goes through the `httpx` clients
this object owns: connections are kept alive and reused across clients. It
is created at start-up and closed at shutdown by the app.

Why lanes: httpcore's pool scans every connection it holds -- polling each
idle socket -- whenever a request starts or ends, so its cost per request
grows with the number of connections. At 50 concurrent requests that scan
was most of the daemon's CPU (measured: 7.8 s of CPU for 1000 requests). The
pool is therefore split into lanes of at most `LANE_CONNECTIONS` connections,
each its own `httpx.AsyncClient`; a request takes the least busy lane (the
first on ties, so light traffic keeps reusing the same warm connections).
The totals still honour `pool.max_connections` and `pool.max_keepalive`.

Why transports and not `httpx.AsyncClient`: a lane sends a prebuilt
`httpx.Request` straight to its httpx transport (httpcore's or aiohttp's).
The client's `send` wraps that in auth, redirect, cookie, event-hook and
default-header handling the daemon never uses -- measured at ~80 us of a
~340 us call against the simulator. Requests, responses, transports and
exceptions are httpx's, on either transport.
"""

from __future__ import annotations

import importlib.util

import anyio
import anyio.abc
import httpx
import structlog

from . import __version__
from .config import PoolConfig

__all__ = ["HttpPool", "LANE_CONNECTIONS", "resolve_transport"]

log = structlog.get_logger("claifd.pool")


def resolve_transport(wanted: str) -> str:
    """ "aiohttp" or "httpcore" for `pool.transport` (auto: aiohttp when installed)."""
    available = importlib.util.find_spec("httpx_aiohttp") is not None
    if wanted == "httpcore" or (wanted == "auto" and not available):
        return "httpcore"
    if not available:
        log.warning("pool.transport is aiohttp but httpx-aiohttp is not installed; using httpcore "
                    "(pip install 'claifd[fast]')")
        return "httpcore"
    return "aiohttp"

LANE_CONNECTIONS = 8


def _split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as whole numbers allow."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# What every upstream request carries besides its provider's headers (httpx
# adds Host and Content-Length). No cookies: the APIs need none, and one
# user's cookie must not ride along with another's call.
DEFAULT_HEADERS = {"user-agent": f"claifd/{__version__}", "accept": "*/*", "accept-encoding": "gzip, deflate"}


class _Lane:
    __slots__ = ("transport", "in_flight", "max_connections", "extensions")

    def __init__(self, transport: httpx.AsyncBaseTransport, max_connections: int, timeout: httpx.Timeout) -> None:
        self.transport = transport
        self.in_flight = 0
        self.max_connections = max_connections
        self.extensions = {"timeout": timeout.as_dict()}

    async def send(self, method: str, url: httpx.URL | str, headers: dict[str, str],
                   content: bytes | None = None) -> httpx.Response:
        """The response with its body unread: read it (`aread` closes it) or
        `aclose` it. Redirects are never followed (these APIs have none, and
        following one could send the key to another host)."""
        request = httpx.Request(method, url, headers={**DEFAULT_HEADERS, **headers}, content=content,
                                extensions=self.extensions)
        return await self.transport.handle_async_request(request)


class HttpPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._lanes = self._build(config)
        self.generation = 1
        self._task_group: anyio.abc.TaskGroup | None = None

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Where retired lanes wait for their last request before closing."""
        self._task_group = task_group

    def reconfigure(self, config: PoolConfig) -> list[_Lane]:
        """New lanes for new requests (config reload); the old ones keep
        serving the requests they carry and close when idle (once started),
        so no request in flight fails. Returns the retired lanes."""
        retired, self._lanes = self._lanes, self._build(config)
        self.config = config
        self.generation += 1
        if self._task_group is not None:
            self._task_group.start_soon(self.close_when_idle, retired)
        return retired

    @staticmethod
    async def close_when_idle(lanes: list[_Lane], poll: float = 0.05) -> None:
        while any(lane.in_flight for lane in lanes):
            await anyio.sleep(poll)
        for lane in lanes:
            await lane.transport.aclose()

    def _build(self, config: PoolConfig) -> list[_Lane]:
        total = max(1, config.max_connections)
        lanes = -(-total // LANE_CONNECTIONS)
        # One TLS context for every lane: building one loads the CA bundle,
        # about 20 ms each.
        tls = httpx.create_ssl_context()
        timeout = httpx.Timeout(
            connect=float(config.connect_timeout),
            read=float(config.read_timeout),
            write=float(config.write_timeout),
            pool=float(config.pool_timeout),
        )
        self.transport = resolve_transport(config.transport)
        out = []
        for connections, keepalive in zip(_split(total, lanes), _split(max(0, config.max_keepalive), lanes)):
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive,
                                  keepalive_expiry=float(config.keepalive_expiry))
            transport: httpx.AsyncBaseTransport
            if self.transport == "aiohttp":
                from .transport import Transport  # imports aiohttp: only when chosen

                transport = Transport(limits=limits, verify=tls, trust_env=False)
            else:
                transport = httpx.AsyncHTTPTransport(limits=limits, verify=tls, trust_env=False)
            out.append(_Lane(transport, connections, timeout))
        return out

    def acquire(self) -> _Lane:
        """The least busy lane, for one request; give it back with `release`."""
        lane = min(self._lanes, key=_busy)
        lane.in_flight += 1
        return lane

    @staticmethod
    def release(lane: _Lane) -> None:
        lane.in_flight -= 1

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self._lanes)

    def stats(self) -> dict[str, int | str]:
        return {
            "transport": self.transport,
            "generation": self.generation,
            "lanes": len(self._lanes),
            "in_flight": self.in_flight,
            "max_connections": sum(lane.max_connections for lane in self._lanes),
        }

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.transport.aclose()

    def __repr__(self) -> str:
        return f"<HttpPool lanes={len(self._lanes)} in_flight={self.in_flight} max_connections={self.config.max_connections}>"


def _busy(lane: _Lane) -> float:
    # Fill ratio, so a smaller last lane is not overloaded.
    return lane.in_flight / lane.max_connections
