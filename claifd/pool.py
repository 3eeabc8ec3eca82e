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

Why lanes of our own and not `httpx.AsyncClient`: a lane is the small
interface the providers call (`send` -> an `UpstreamResponse`: status,
headers, `aread`, `aiter_text`, `aclose`). The httpcore lane sends a
prebuilt `httpx.Request` straight to httpx's transport: the client's `send`
wraps that in auth, redirect, cookie, event-hook and default-header handling
the daemon never uses (measured at ~80 us of a ~340 us call against the
simulator). The aiohttp lane (claifd/transport.py) talks to aiohttp without
httpx's Request/Response layer at all (~135 us a call less). Failures are
httpx's exceptions on both.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.abc
import httpx
import structlog

from . import __version__
from .config import PoolConfig

__all__ = ["HttpPool", "LANE_CONNECTIONS", "ParsedURLs", "ReadOnce", "UpstreamResponse", "resolve_transport"]

log = structlog.get_logger("claifd.pool")


def resolve_transport(wanted: str) -> str:
    """ "native", "aiohttp" or "httpcore" for `pool.transport` (auto: native)."""
    if wanted in ("auto", "native", "httpcore"):
        return "native" if wanted == "auto" else wanted
    if importlib.util.find_spec("aiohttp") is None:
        log.warning("pool.transport is aiohttp but aiohttp is not installed; using the native client "
                    "(pip install 'claifd[fast]')")
        return "native"
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


class UpstreamResponse(Protocol):
    """What a lane's `send` returns, on either transport (an `httpx.Response`
    is one): the body unread until `aread` (which releases the connection)
    or `aiter_text`; `aclose` always, which closes a connection whose body
    was not read to its end."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    async def aread(self) -> bytes: ...
    def aiter_text(self) -> AsyncIterator[str]: ...
    async def aclose(self) -> None: ...


class ReadOnce:
    """`content`: the body `aread` kept (httpx's ResponseNotRead before that)."""

    __slots__ = ()
    _content: bytes | None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content


class Sender(Protocol):
    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...
    def counts(self) -> tuple[int, int] | None:
        """(connections open, of which idle), if the client says."""


T = TypeVar("T")


class ParsedURLs(Generic[T]):
    """Each URL parsed once (the providers send to a handful; parsing a
    string costs ~10-20 us a request in httpx and yarl)."""

    def __init__(self, parse: Callable[[str], T]) -> None:
        self._parse = parse
        self._parsed: dict[str, T] = {}

    def get(self, url: str) -> T:
        parsed = self._parsed.get(url)
        if parsed is None:
            if len(self._parsed) > 64:
                self._parsed.clear()
            parsed = self._parsed[url] = self._parse(url)
        return parsed


class HttpcoreLane:
    """httpx's own transport (httpcore), sent a prebuilt request."""

    def __init__(self, transport: httpx.AsyncHTTPTransport, timeout: httpx.Timeout) -> None:
        self.transport = transport
        self.extensions = {"timeout": timeout.as_dict()}
        self._urls = ParsedURLs(httpx.URL)

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> httpx.Response:
        request = httpx.Request(method, self._urls.get(url), headers=headers, content=content,
                                extensions=self.extensions)
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def counts(self) -> None:
        return None  # httpcore does not say


class _Lane:
    __slots__ = ("sender", "in_flight", "max_connections")

    def __init__(self, sender: Sender, max_connections: int) -> None:
        self.sender = sender
        self.in_flight = 0
        self.max_connections = max_connections

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> UpstreamResponse:
        """The response with its body unread: read it (`aread` releases the
        connection) or `aclose` it. Redirects are never followed (these APIs
        have none, and following one could send the key to another host)."""
        return await self.sender.send(method, url, {**DEFAULT_HEADERS, **headers}, content)


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
            await lane.sender.aclose()

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
        if self.transport == "native":
            tls.set_alpn_protocols(["http/1.1"])  # the native lane speaks nothing else
        out = []
        for connections, keepalive in zip(_split(total, lanes), _split(max(0, config.max_keepalive), lanes)):
            sender: Sender
            if self.transport == "native":
                from .http1 import Http1Lane

                sender = Http1Lane(connections, float(config.keepalive_expiry), tls, timeout)
            elif self.transport == "aiohttp":
                from .transport import AiohttpLane  # imports aiohttp: only when chosen

                # aiohttp keeps every idle connection until keepalive_expiry
                # (it has no separate keep-alive count).
                sender = AiohttpLane(connections, float(config.keepalive_expiry), tls, timeout)
            else:
                limits = httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive,
                                      keepalive_expiry=float(config.keepalive_expiry))
                sender = HttpcoreLane(httpx.AsyncHTTPTransport(limits=limits, verify=tls, trust_env=False), timeout)
            out.append(_Lane(sender, connections))
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
        stats: dict[str, int | str] = {
            "transport": self.transport,
            "generation": self.generation,
            "lanes": len(self._lanes),
            "in_flight": self.in_flight,
            "max_connections": sum(lane.max_connections for lane in self._lanes),
        }
        counts = [c for lane in self._lanes if (c := lane.sender.counts()) is not None]
        if counts:  # the native lanes count their connections (the others do not say)
            stats["connections_open"] = sum(open_ for open_, _ in counts)
            stats["connections_idle"] = sum(idle for _, idle in counts)
        return stats

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.sender.aclose()

    def __repr__(self) -> str:
        return f"<HttpPool lanes={len(self._lanes)} in_flight={self.in_flight} max_connections={self.config.max_connections}>"


def _busy(lane: _Lane) -> float:
    # Fill ratio, so a smaller last lane is not overloaded.
    return lane.in_flight / lane.max_connections
