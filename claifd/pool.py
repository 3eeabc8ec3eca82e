"""The daemon's one HTTP connection pool to the providers.

Every upstream request from every client goes through the aiohttp session
this object owns (claifd/transport.py): connections are kept alive and
reused across clients. It is created at start-up and closed at shutdown by
the app; a configuration change builds a new session for new requests while
the old one finishes the requests it carries.

What the pool itself adds to aiohttp: the proxy each URL goes through
(`Proxies`), the TLS context (`tls_context`), the limits on an answer
(`BoundedBody`: its size after decompression, one stream line, its head),
a certificate failure told apart (`UpstreamTLSError`), and a kept-alive
connection found dead replaced at once (`_Lane.send`).

Why aiohttp alone, and not httpx: measured side by side (bench/bench_transport.py),
httpx's Request/Response layer costs ~75 us a call and its httpcore pool
scans every connection it holds on each request (at concurrency 50 that
scan was most of the daemon's CPU); a miss through the daemon on httpcore
was 1.43 x a user's own direct httpx call, on aiohttp 0.92 x. httpcore also
read an unrequested answer glued to a real one as the next answer, which
no public interface can prevent. A lane is the daemon's own small interface
(`Sender.send` -> an `UpstreamResponse`: status, headers, `aread`,
`aiter_text`, `aclose`); failures are httpx's exceptions, the providers'
one vocabulary for retry rules.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.abc
import httpx
import structlog

from . import __version__
from .answers import BoundedBody, StaleConnection, UpstreamResponse
from .config import PoolConfig
from .redaction import redact_url

__all__ = ["HttpPool", "ParsedURLs", "Proxies", "UpstreamTLSError", "tls_context"]

log = structlog.get_logger("claifd.pool")


class UpstreamTLSError(httpx.ConnectError):
    """The upstream's certificate was refused, or it refused ours: no retry
    can fix it (the providers raise `tls_error`)."""


def tls_error(exc: BaseException, host: str) -> UpstreamTLSError | None:
    """The TLS failure behind a connect error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        # aiohttp's connector errors keep the ssl module's error apart.
        seen = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None) or seen
        reason = getattr(seen, "reason", None) or ""
        if isinstance(seen, ssl.SSLCertVerificationError):
            detail = getattr(seen, "verify_message", None) or reason or str(seen)
            return UpstreamTLSError(f"the certificate of {host} was refused: {detail}")
        if isinstance(seen, ssl.SSLError) and "ALERT" in reason:
            return UpstreamTLSError(f"{host} ended the TLS handshake ({reason}): does it want a client "
                                    "certificate (pool.client_cert)?")
        seen = seen.__cause__ or seen.__context__
    return None


def tls_context(config: PoolConfig) -> ssl.SSLContext:
    """The one TLS context of every lane: httpx's defaults (certifi, or
    SSL_CERT_FILE), plus `pool.ca_file`, the client certificate, `pool.verify`."""
    tls = httpx.create_ssl_context(trust_env=True)
    if config.ca_file:
        tls.load_verify_locations(os.path.expanduser(config.ca_file))
    if config.client_cert:
        tls.load_cert_chain(os.path.expanduser(config.client_cert),
                            os.path.expanduser(config.client_key) if config.client_key else None)
    if not config.verify:
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        log.warning("pool.verify is false: upstream certificates are not checked (anyone between this machine "
                    "and the provider can read the API key)")
    return tls


# NO_PROXY's matching, as the standard library does it (not in typeshed's stubs).
_proxy_bypass: Callable[[str, dict[str, str]], bool] = getattr(urllib.request, "proxy_bypass_environment")


class Proxies:
    """Which proxy each upstream URL goes through: `pool.proxy` when set ("" =
    none), else the environment as httpx reads it (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, NO_PROXY; loopback not exempt unless NO_PROXY says so), through
    the standard library's own parsing of those variables."""

    def __init__(self, configured: str | None) -> None:
        self.configured = configured
        # The environment is read when the pool is built (start-up, a config change).
        self._env = urllib.request.getproxies_environment() if configured is None else {}
        self._chosen = ParsedURLs(self._choose)

    def for_url(self, url: str) -> str | None:
        """The proxy URL for `url` (None: connect directly), decided once per URL."""
        return self._chosen.get(url)

    def _choose(self, url: str) -> str | None:
        if self.configured is not None:
            return self.configured or None
        split = urllib.parse.urlsplit(url)
        chosen = self._env.get(split.scheme) or self._env.get("all")
        if not chosen or (split.hostname and _proxy_bypass(split.netloc, self._env)):
            return None
        return chosen if "://" in chosen else "http://" + chosen  # HTTPS_PROXY=host:port, as curl and httpx accept

    def describe(self) -> str:
        """What is in use, without credentials (status, logs)."""
        if self.configured is not None:
            return redact_url(self.configured) if self.configured else "none"
        names = {"http": "HTTP_PROXY", "https": "HTTPS_PROXY", "all": "ALL_PROXY", "no": "NO_PROXY"}
        used = [f"{names[k]}={redact_url(v) if k != 'no' else v}" for k, v in self._env.items() if k in names]
        return "environment: " + ", ".join(used) if used else "none"


# What every upstream request carries besides its provider's headers (httpx
# adds Host and Content-Length). No cookies: the APIs need none, and one
# user's cookie must not ride along with another's call.
DEFAULT_HEADERS = {"user-agent": f"claifd/{__version__}", "accept": "*/*", "accept-encoding": "gzip, deflate"}


class Sender(Protocol):
    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> BoundedBody: ...
    async def aclose(self) -> None: ...


T = TypeVar("T")


class ParsedURLs(Generic[T]):
    """What is derived from a URL, once per URL (the providers send to a
    handful; parsing a string costs ~10-20 us a request in httpx and yarl)."""

    def __init__(self, parse: Callable[[str], T]) -> None:
        self._parse = parse
        self._parsed: dict[str, T] = {}

    def get(self, url: str) -> T:
        try:
            return self._parsed[url]
        except KeyError:  # (a result may be None: no proxy for that URL)
            if len(self._parsed) > 64:
                self._parsed.clear()
            parsed = self._parsed[url] = self._parse(url)
            return parsed


# How many kept-alive connections found dead one request may skip at once,
# before its failure goes to the providers' retry policy (with its backoff).
STALE_RETRIES = 2


class _Lane:
    __slots__ = ("sender", "in_flight", "max_connections", "stale")

    def __init__(self, sender: Sender, max_connections: int) -> None:
        self.sender = sender
        self.in_flight = 0
        self.max_connections = max_connections
        self.stale = 0  # requests sent again at once: their connection was found dead

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> UpstreamResponse:
        """The response with its body unread: read it (`aread` releases the
        connection) or `aclose` it. Redirects are never followed (these APIs
        have none, and following one could send the key to another host).

        A kept-alive connection the server had closed (reset, a broken pipe,
        or the end before any byte of an answer) never got the request: it is
        sent again at once, no backoff, outside the retry budget."""
        headers = {**DEFAULT_HEADERS, **headers}
        for tries_left in range(STALE_RETRIES, -1, -1):
            try:
                return await self.sender.send(method, url, headers, content)
            except StaleConnection:
                if not tries_left:
                    raise
                self.stale += 1
        raise AssertionError("unreachable")


class HttpPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._retired_stale = 0
        self._lane = self._build(config)
        self.generation = 1
        self._task_group: anyio.abc.TaskGroup | None = None

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Where a retired lane waits for its last request before closing."""
        self._task_group = task_group

    def reconfigure(self, config: PoolConfig) -> _Lane:
        """A new lane for new requests (config reload); the old one keeps
        serving the requests it carries and closes when idle (once started),
        so no request in flight fails. Returns the retired lane."""
        self._retired_stale += self._lane.stale
        retired, self._lane = self._lane, self._build(config)
        self.config = config
        self.generation += 1
        if self._task_group is not None:
            self._task_group.start_soon(self.close_when_idle, retired)
        return retired

    @staticmethod
    async def close_when_idle(lane: _Lane, poll: float = 0.05) -> None:
        while lane.in_flight:
            await anyio.sleep(poll)
        await lane.sender.aclose()

    def _build(self, config: PoolConfig) -> _Lane:
        from .transport import AiohttpLane  # imports aiohttp

        self.proxies = proxies = Proxies(config.proxy)
        timeout = httpx.Timeout(
            connect=float(config.connect_timeout),
            read=float(config.read_timeout),
            write=float(config.write_timeout),
            pool=float(config.pool_timeout),
        )
        connections = max(1, config.max_connections)
        # aiohttp keeps every idle connection until keepalive_expiry (it has
        # no count of idle ones): pool.max_keepalive 0 turns keep-alive off.
        sender = AiohttpLane(connections, float(config.keepalive_expiry), tls_context(config), timeout, proxies,
                             int(config.max_response_bytes), float(config.answer_timeout),
                             keepalive=config.max_keepalive > 0)
        return _Lane(sender, connections)

    def acquire(self) -> _Lane:
        """The lane for one request; give it back with `release`."""
        lane = self._lane
        lane.in_flight += 1
        return lane

    @staticmethod
    def release(lane: _Lane) -> None:
        lane.in_flight -= 1

    @property
    def stale_reconnects(self) -> int:
        """Requests sent again at once because their kept-alive connection was dead."""
        return self._retired_stale + self._lane.stale

    @property
    def in_flight(self) -> int:
        return self._lane.in_flight

    def stats(self) -> dict[str, int | str]:
        return {
            "transport": "aiohttp",
            "generation": self.generation,
            "in_flight": self.in_flight,
            "max_connections": self._lane.max_connections,
            "proxy": self.proxies.describe(),
            "stale_reconnects": self.stale_reconnects,
        }

    async def aclose(self) -> None:
        await self._lane.sender.aclose()

    def __repr__(self) -> str:
        return f"<HttpPool in_flight={self.in_flight} max_connections={self.config.max_connections}>"
