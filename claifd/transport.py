"""The aiohttp transport under the daemon's httpx clients (`pool.transport`).

httpx-aiohttp keeps the httpx API the providers are written against and
moves the HTTP work to aiohttp's C-accelerated client. Its exception mapping
is coarse: every `aiohttp.ClientConnectionError` -- a refused connection, a
server that hung up mid-body -- becomes `httpx.ConnectTimeout`, so the
daemon would call an unreachable or dropped upstream "timed out" and retry a
stream it must not. This module maps aiohttp's errors to the httpx errors
the httpcore transport raises for the same event, for requests and for
response bodies read later (SSE streams):

    aiohttp                                 httpx
    ClientConnectorError (refused, DNS)     ConnectError
    ConnectionTimeoutError                  ConnectTimeout
    SocketTimeoutError                      ReadTimeout
    ServerDisconnectedError, PayloadError   RemoteProtocolError
    other ClientOSError                     ReadError
    asyncio.TimeoutError (total timeout)    ReadTimeout

Imported only when the aiohttp transport is chosen (it imports aiohttp).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp import ClientSession
from httpx_aiohttp.transport import AiohttpResponseStream, AiohttpTransport

__all__ = ["Transport", "map_error"]


def map_error(exc: BaseException) -> BaseException:
    """The httpx error that httpcore would raise for this aiohttp one (or `exc`)."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None else exc
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(cause, aiohttp.ClientOSError):
        return httpx.ReadError(message)
    if isinstance(cause, asyncio.TimeoutError) and not isinstance(exc, httpx.TimeoutException):
        return httpx.ReadTimeout(message)
    return exc


class _Body(httpx.AsyncByteStream):
    """A response body whose read errors are mapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            mapped = map_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        except (httpx.TransportError, aiohttp.ClientError):
            pass  # closing a connection that already failed


class Transport(AiohttpTransport):
    """httpx-aiohttp's transport with the daemon's error mapping, and a
    leaner request: the session keeps no cookies (aiohttp's jar parses every
    response), and the aiohttp timeout is built once per timeout settings
    rather than per request (the pool gives each lane one settings dict)."""

    _timeout: tuple[object, aiohttp.ClientTimeout] | None = None

    def get_client(self) -> ClientSession:
        connector = aiohttp.TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry, ssl=self.ssl_context,
            limit=self.limits.max_connections or 0,
        )
        return ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    def _client_timeout(self, settings: Any) -> aiohttp.ClientTimeout:
        cached = self._timeout
        if cached is None or cached[0] is not settings:
            timeout = aiohttp.ClientTimeout(sock_connect=settings.get("connect"), sock_read=settings.get("read"),
                                            connect=settings.get("pool"))
            cached = self._timeout = (settings, timeout)
        return cached[1]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.client
        if not isinstance(session, ClientSession):
            session = self.client = self.get_client()
        try:
            response = await session.request(
                request.method, str(request.url), headers=request.headers.multi_items(),
                data=request.content or None, allow_redirects=False, auto_decompress=False, compress=False,
                timeout=self._client_timeout(request.extensions.get("timeout", {})),
            ).__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            mapped = map_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_Body(AiohttpResponseStream(response)), request=request, extensions=extensions)
