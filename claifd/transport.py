"""The aiohttp lane (`pool.transport`: aiohttp): upstream calls on aiohttp's
C-accelerated client, without httpx's Request/Response layer.

Why not httpx over an aiohttp transport (httpx-aiohttp, which the SDKs
offer): measured side by side against `claif-sim --fast`, one call at a
time, httpx's own layer costs ~75 us a call even over a transport that does
nothing, and the adapter ~60 us more: httpx+aiohttp took ~265 us a call
where aiohttp alone took ~130 us (bench/bench_transport.py, "legs"). That
layer was the whole gap between a miss through the daemon and a user's own
direct call. So a lane is the daemon's own small interface (`pool.Lane`:
`send` -> an `UpstreamResponse`), and this one speaks aiohttp directly.

Failures are raised as the httpx exceptions httpx would raise for the same
event, the providers' one vocabulary for their retry rules:

    aiohttp                                 httpx
    ClientConnectorError (refused, DNS)     ConnectError
    ConnectionTimeoutError                  ConnectTimeout
    SocketTimeoutError                      ReadTimeout
    ServerDisconnectedError, PayloadError   RemoteProtocolError
    other ClientOSError                     ReadError
    asyncio.TimeoutError (total timeout)    ReadTimeout (AnswerTimeout)
    the request unsent in write_timeout     WriteTimeout
    InvalidURL                              UnsupportedProtocol
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
import structlog
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.http_exceptions import LineTooLong
from yarl import URL

from .answers import (
    MAX_HEAD_BYTES,
    AnswerTimeout,
    AnswerTooLarge,
    BoundedBody,
    StaleConnection,
    check_head,
    stale_connection,
)
from .pool import ParsedURLs, Proxies, tls_error

__all__ = ["AiohttpLane", "AiohttpResponse", "map_error"]

_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
log = structlog.get_logger("claifd.upstream")


def map_error(exc: BaseException, host: str = "") -> BaseException:
    """The httpx error that httpcore would raise for this aiohttp one (or `exc`)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ClientConnectorError)) and (tls := tls_error(exc, host)):
        return tls
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientResponseError):  # a status line or headers aiohttp cannot parse
        if "Too many headers" in message or "Got more than" in message or isinstance(exc.__cause__, LineTooLong):
            return AnswerTooLarge(f"the answer's head passed aiohttp's limits (at most {MAX_HEAD_BYTES} bytes "
                                  f"are read): {message}")
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's total deadline (sock_read's is a SocketTimeoutError)
        return AnswerTimeout("the answer took longer than pool.answer_timeout")
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(message)
    return exc


class AiohttpResponse(BoundedBody):
    """An upstream answer with its body unread: `aread` it (the connection
    goes back to the pool) or `aclose` it (a body not read to its end
    closes the connection: the upstream stops generating). aiohttp inflates
    a compressed body a bounded piece at a time as it is read."""

    __slots__ = ("_response", "status_code", "headers", "reason_phrase")

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int) -> None:
        super().__init__(max_bytes, response.charset or "utf-8")
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers
        self.reason_phrase = response.reason or ""

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _ERRORS as exc:
            self._response.close()
            raise map_error(exc) from exc
        self._response.release()

    def _abort(self) -> None:
        self._response.close()

    async def aread(self) -> bytes:
        """A body of a declared length, not compressed (most JSON answers),
        in one read: its length is checked before a byte is read, and aiohttp
        reads no more than it declares. Anything else, chunk by chunk."""
        response = self._response
        length = response.content_length
        if self._content is not None or length is None or "content-encoding" in response.headers:
            return await super().aread()
        if length > self.max_bytes:
            raise self._too_large(f"the answer passed pool.max_response_bytes ({self.max_bytes} bytes)")
        try:
            self._content = await response.read()
        except _ERRORS as exc:
            response.close()
            raise map_error(exc) from exc
        return self._content

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()
        else:
            response.close()


class _CheckedRequest(aiohttp.ClientRequest):
    """A request that is never written to a kept-alive connection holding
    bytes nobody asked for (an answer the server sent unrequested, after the
    last one or while the connection sat idle): aiohttp would read those as
    this request's answer. The connection is closed instead, and the request
    goes on a fresh one at once (`StaleConnection`).

    Its body is written within `write_timeout` (aiohttp has no write
    timeout, and starts the read timeout only once the body is out: a server
    that never reads would hold the call until pool.answer_timeout). As in
    httpx, the bound is on each write, and a request's body is one write."""

    write_timeout = 30.0  # set per lane (`_request_class`)

    async def write_bytes(self, writer: AbstractStreamWriter, conn: Connection,
                          content_length: int | None = None) -> None:
        protocol = conn.protocol
        task = asyncio.current_task()
        assert task is not None and protocol is not None
        timer = asyncio.get_running_loop().call_later(self.write_timeout, _write_timed_out, task, protocol,
                                                      self.write_timeout)
        try:
            await super().write_bytes(writer, conn, content_length)
        finally:
            timer.cancel()

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        protocol = conn.protocol
        if protocol is not None and protocol.should_close:
            log.warning("an upstream sent bytes nobody asked for on a kept-alive connection: closed it",
                        host=self.url.host)
            conn.close()
            raise StaleConnection("the kept-alive connection held an answer nobody asked for")
        return await super().send(conn)


def _write_timed_out(task: asyncio.Task[None], protocol: ResponseHandler, timeout: float) -> None:
    """The request's body is still not out: the answer's reader gets
    WriteTimeout, and the write is cancelled (aiohttp closes the connection)."""
    protocol.set_exception(httpx.WriteTimeout(f"the request was not sent within pool.write_timeout ({timeout:g} s): "
                                              "the upstream is not reading"))
    task.cancel()


def _request_class(write_timeout: float) -> type[_CheckedRequest]:
    return type("CheckedRequest", (_CheckedRequest,), {"write_timeout": write_timeout})


class AiohttpLane:
    """One aiohttp session (its own connector: `max_connections`, keep-alive
    expiry, TLS) and the timeouts of every request it sends."""

    def __init__(self, max_connections: int, keepalive_expiry: float, tls: ssl.SSLContext,
                 timeout: httpx.Timeout, proxies: Proxies, max_bytes: int, answer_timeout: float,
                 keepalive: bool = True) -> None:
        self._max_bytes = max_bytes
        self._limits = (max_connections, keepalive_expiry, tls, keepalive)
        self._write_timeout = float(timeout.write or 30.0)
        self._proxies = proxies
        # Each proxy URL once: aiohttp wants its credentials apart.
        self._proxy_auth = ParsedURLs(_split_auth)
        # connect covers the wait for a pooled connection as well (httpx's
        # pool timeout); the write timeout is the request's own (_CheckedRequest).
        # `total` is pool.answer_timeout: aiohttp's own deadline for the whole
        # answer, interim answers and the body read included.
        self._timeout = aiohttp.ClientTimeout(total=answer_timeout, sock_connect=timeout.connect,
                                              sock_read=timeout.read, connect=timeout.pool)
        self._session: aiohttp.ClientSession | None = None
        self._urls = ParsedURLs(URL)

    def _open(self) -> aiohttp.ClientSession:
        connections, expiry, tls, keepalive = self._limits
        # pool.max_keepalive 0 (not `keepalive`): a connection a request.
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ssl=tls, force_close=not keepalive,
                                         keepalive_timeout=expiry if keepalive else None)
        # No cookie jar: the APIs need none, and one user's cookie must not
        # ride along with another's call (the jar would also parse every answer).
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                              auto_decompress=True, skip_auto_headers=("user-agent",),
                                              request_class=_request_class(self._write_timeout))
        return self._session

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> AiohttpResponse:
        session = self._session or self._open()
        target = self._urls.get(url)
        proxy = self._proxies.for_url(url)
        proxy_url, proxy_headers = None, None
        if proxy:
            proxy_url, credentials = self._proxy_auth.get(proxy)
            if credentials and target.scheme == "https":  # on the CONNECT (aiohttp adds its Host to the dict)
                proxy_headers = {"Proxy-Authorization": credentials}
            elif credentials:  # on the request itself, which the proxy forwards
                headers = {**headers, "Proxy-Authorization": credentials}
        try:
            response = await session.request(method, target, headers=headers, data=content,
                                             allow_redirects=False, compress=False, timeout=self._timeout,
                                             proxy=proxy_url, proxy_headers=proxy_headers)
        except _ERRORS as exc:
            mapped = map_error(exc, target.host or "")
            if mapped is exc:
                raise
            if isinstance(mapped, (httpx.RemoteProtocolError, httpx.ReadError)) and stale_connection(exc):
                raise StaleConnection(str(mapped)) from exc
            raise mapped from exc
        too_large = check_head(response.raw_headers)
        if too_large is not None:
            response.close()
            raise too_large
        return AiohttpResponse(response, self._max_bytes)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _split_auth(proxy: str) -> tuple[URL, str | None]:
    """The proxy's URL without credentials, and the Proxy-Authorization that carries them."""
    url = URL(proxy)
    if url.user is None:
        return url, None
    token = base64.b64encode(f"{url.user}:{url.password or ''}".encode()).decode()
    return url.with_user(None), f"Basic {token}"
