"""The native lane (`pool.transport = native`, the default): HTTP/1.1 to the
providers on an asyncio protocol, with llhttp (httptools, the parser the
HTTP front and uvicorn use) reading the responses.

Why a client of our own when aiohttp and httpx exist: measured side by side
against `claif-sim --fast`, one call at a time on a kept-alive connection,
aiohttp took ~125 us a call and the same exchange written straight to an
asyncio stream ~72 us (httpx over httpcore ~370, httpx over aiohttp ~265).
aiohttp's per-request machinery (request and response objects, payload
registry, header multidicts, trace hooks, timers per read) was the largest
cost left on a miss. What the daemon needs of HTTP is narrow -- POST and GET
with a known body to a few hosts, JSON or server-sent events back -- so the
parts that are hard to get right are left to llhttp (framing: content-length,
chunked, read-until-close, keep-alive) and to asyncio (TCP, TLS); this file
is the pool and the request/response plumbing. aiohttp and httpcore stay
selectable (`pool.transport`), and the upstream suite runs on all three.

What it does:
- one connection per request at a time (no pipelining), kept alive and
  reused most-recently-idle first; at most `max_connections` per lane, a
  request over the limit waits (`pool` timeout -> PoolTimeout); idle ones
  close after `keepalive_expiry`, or when the server closes them;
- timeouts: `connect` (TCP and TLS handshake -> ConnectTimeout), `read`
  (no byte for that long while an answer is due -> ReadTimeout);
- gzip and deflate bodies decoded; header values with CR or LF refused
  before anything is sent (LocalProtocolError);
- an answer not read to its end (a cancelled stream, an error) closes its
  connection, so the upstream stops generating; a body that arrives faster
  than a stream's reader takes it pauses reading past 256 KiB.

Failures are raised as the httpx exceptions the httpcore lane raises for the
same event, so the providers' retry rules are one set for every lane.
"""

from __future__ import annotations

import asyncio
import codecs
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools
import httpx

from .pool import ParsedURLs, ReadOnce

__all__ = ["Http1Lane", "Http1Response", "ResponseHeaders"]

# A streamed body buffered beyond this (the reader is slower than the
# upstream) pauses reading from the socket until the reader catches up.
_PAUSE_AT = 256 * 1024


class ResponseHeaders(dict[str, str]):
    """Header names in lower case (repeated ones joined with ", ", as HTTP
    allows); lookups by any case."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)


class _Origin:
    """Where a URL's requests go, parsed once."""

    __slots__ = ("key", "host", "port", "tls", "target", "host_header")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"cannot send to {url!r}: http:// or https:// URLs only")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        default = 443 if self.tls else 80
        self.port = parts.port or default
        self.key = (parts.scheme, self.host, self.port)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One kept-alive connection: sends a request, parses its answer."""

    def __init__(self, lane: Http1Lane, origin_key: tuple[str, str, int]) -> None:
        self.lane = lane
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.closed = False
        # Counted in the lane's `open` (from when the connect returned).
        self.counted = False
        self.idle_since = 0.0
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""

    # ---------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self._last_data = time.monotonic()
        if self.response is None or self.response.complete:
            self._fail(httpx.RemoteProtocolError("the server sent data without a request"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        response = self.response
        if response is not None and not response.complete:
            if response.status_code and response.until_close:
                response.finish()  # its body was "everything until the server closes"
            elif not response.status_code:
                self._fail(httpx.RemoteProtocolError("the server closed the connection without answering")
                           if exc is None else httpx.ReadError(str(exc) or type(exc).__name__))
            else:
                self._fail(httpx.RemoteProtocolError("the server closed the connection before the answer ended")
                           if exc is None else httpx.ReadError(str(exc) or type(exc).__name__))
        self._closed()

    # ------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        headers = ResponseHeaders()
        for raw_name, raw_value in self._headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        response.headers = headers
        response.reason_phrase = self._reason.decode("latin-1")
        response.keep_alive = self.parser.should_keep_alive()
        response.until_close = ("content-length" not in headers and status not in (204, 304)
                                and "chunked" not in (headers.get("transfer-encoding") or "").lower())
        encoding = (headers.get("content-encoding") or "").lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            response.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding != "deflate" else zlib.MAX_WBITS)
            response.raw_deflate = encoding == "deflate"
        response.status_code = status
        waiter = response.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is None or not response.status_code:
            return  # an interim answer's body (there is none)
        response.feed(body)
        if response.buffered > _PAUSE_AT and response.streaming and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or not response.status_code:
            return  # the end of an interim answer
        self._stop_timer()
        response.finish()

    # ------------------------------------------------------------- requests

    def send(self, head: bytes, content: bytes | None, response: Http1Response) -> None:
        assert self.transport is not None
        self.response = response
        self._last_data = time.monotonic()
        try:
            self.transport.write(head + content if content else head)
        except (RuntimeError, OSError) as exc:  # closed under us (uvloop raises, asyncio logs)
            raise httpx.WriteError(f"cannot send: {exc}") from exc
        self._arm_timer()

    def resume(self) -> None:
        """The stream's reader caught up: read from the socket again."""
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._last_data = time.monotonic()  # the read timeout counts from now, not from before the pause
            self.transport.resume_reading()

    def _arm_timer(self) -> None:
        timeout = self.lane.read_timeout
        if timeout is not None and self._timer is None:
            delay = max(0.0, self._last_data + timeout - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._check_read)

    def _check_read(self) -> None:
        """The read timer fired: time out, unless data came since it was set."""
        self._timer = None
        response = self.response
        if response is None or response.complete or self.closed:
            return
        timeout = self.lane.read_timeout
        assert timeout is not None
        if self._paused or (self.transport is not None and self.transport.get_write_buffer_size() > 0):
            # The reader is slow, or the request is still going out: nothing
            # is due yet, the timeout counts from now.
            self._last_data = time.monotonic()
        if time.monotonic() - self._last_data < timeout:
            self._arm_timer()
            return
        self._fail(httpx.ReadTimeout(f"no data for {timeout:g} s"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: Exception) -> None:
        response = self.response
        if response is not None and not response.complete:
            response.fail(error)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._closed()

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_timer()
            if self.counted:
                self.lane._forget(self)

    def release(self) -> None:
        """The answer was read to its end: back to the pool, or closed."""
        response = self.response
        self.response = None
        if self.closed:
            return
        if response is None or not response.complete or not response.keep_alive or response.until_close:
            self.close()
        else:
            self.lane._put_back(self)


class Http1Response(ReadOnce):
    """An upstream answer with its body unread: `aread` it (the connection
    goes back to the pool) or stream it with `aiter_text`; `aclose` always."""

    __slots__ = ("status_code", "headers", "reason_phrase", "keep_alive", "until_close", "complete", "streaming",
                 "buffered", "decoder", "raw_deflate", "headers_waiter", "_conn", "_chunks", "_error", "_wakeup",
                 "_content", "_released")

    def __init__(self, conn: _Connection) -> None:
        self.status_code = 0
        self.headers: Mapping[str, str] = ResponseHeaders()
        self.reason_phrase = ""
        self.keep_alive = False
        self.until_close = False
        self.complete = False
        self.streaming = False
        self.buffered = 0
        self.decoder: zlib._Decompress | None = None
        self.raw_deflate = False
        self.headers_waiter: asyncio.Future[None] | None = None
        self._conn = conn
        self._chunks: list[bytes] = []
        self._error: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._content: bytes | None = None
        self._released = False

    # ------------------------------------------------- the connection's side

    def feed(self, body: bytes) -> None:
        self._chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: Exception) -> None:
        self._error = error
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _more(self) -> None:
        """Wait for more body, its end or a failure."""
        self._wakeup = asyncio.get_running_loop().create_future()
        await self._wakeup

    def _take(self) -> bytes:
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self.buffered = 0
        self._conn.resume()
        return self._decode(data)

    def _decode(self, data: bytes) -> bytes:
        decoder = self.decoder
        if decoder is None or not data:
            return data
        try:
            return decoder.decompress(data)
        except zlib.error as exc:
            if self.raw_deflate:  # "deflate" sent without its zlib wrapper, as some servers do: once more, raw
                self.raw_deflate = False
                self.decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decode(data)
            raise httpx.DecodingError(f"cannot decode the {self.headers.get('content-encoding')} body: {exc}") from exc

    # ------------------------------------------------------ the reader's side

    async def aread(self) -> bytes:
        if self._content is not None:
            return self._content
        try:
            while not self.complete:
                if self._error is not None:
                    raise self._error
                await self._more()
            if self._error is not None:
                raise self._error
            body = self._take()
            if self.decoder is not None:
                body += self.decoder.flush()
        except BaseException:
            self._close()
            raise
        self._content = body
        self._release()
        return body

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body as text, as it arrives (server-sent events)."""
        self.streaming = True
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                if self._chunks:
                    text = decoder.decode(self._take())
                    if text:
                        yield text
                    continue
                if self._error is not None:
                    raise self._error
                if self.complete:
                    break
                await self._more()
        except BaseException:
            self._close()
            raise
        tail = decoder.decode(self.decoder.flush() if self.decoder is not None else b"", final=True)
        self._release()
        if tail:
            yield tail

    async def aclose(self) -> None:
        if self.complete and not self._chunks and self._error is None:
            self._release()
        else:
            self._close()  # unread: the upstream must stop sending

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.release()

    def _close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.response = None
            self._conn.close()


class Http1Lane:
    """A bounded pool of kept-alive HTTP/1.1 connections (any origin)."""

    def __init__(self, max_connections: int, keepalive_expiry: float, tls: ssl.SSLContext,
                 timeout: httpx.Timeout) -> None:
        self.max_connections = max(1, max_connections)
        self.keepalive_expiry = keepalive_expiry
        self.tls = tls
        self.connect_timeout = timeout.connect
        self.read_timeout = timeout.read
        self.pool_timeout = timeout.pool
        self.open = 0  # connections open or opening
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._origins = ParsedURLs(_Origin)
        self._sweep: asyncio.TimerHandle | None = None
        self._closing = False

    def __repr__(self) -> str:
        open_, idle = self.counts()
        return f"<Http1Lane open={open_} idle={idle} max={self.max_connections}>"

    def counts(self) -> tuple[int, int]:
        """(connections open or opening, of which idle)."""
        return self.open, sum(len(v) for v in self._idle.values())

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   content: bytes | None = None) -> Http1Response:
        origin = self._origins.get(url)
        head = _head(method, origin, headers, content)
        conn = await self._acquire(origin)
        response = Http1Response(conn)
        waiter = response.headers_waiter = asyncio.get_running_loop().create_future()
        try:
            conn.send(head, content, response)
            await waiter
        except BaseException:
            response._close()  # cancelled or failed before the answer: the connection cannot be reused
            raise
        return response

    # ---------------------------------------------------------------- pool

    async def _acquire(self, origin: _Origin) -> _Connection:
        deadline = None
        while True:
            if self._closing:
                raise httpx.PoolTimeout("the connection pool is closed")
            idle = self._idle.get(origin.key)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                transport = conn.transport
                if (not conn.closed and transport is not None and not transport.is_closing()
                        and now - conn.idle_since < self.keepalive_expiry):
                    return conn
                conn.close()
            if self.open < self.max_connections:
                return await self._connect(origin)
            if self._close_an_idle_one():  # idle for another origin: make room
                continue
            if deadline is None:
                deadline = now + (self.pool_timeout if self.pool_timeout is not None else float("inf"))
            if now >= deadline:
                raise httpx.PoolTimeout("no free connection in time")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                if deadline == float("inf"):
                    await waiter
                else:
                    await asyncio.wait_for(waiter, deadline - now)
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, origin: _Origin) -> _Connection:
        self.open += 1
        loop = asyncio.get_running_loop()
        try:
            coro = loop.create_connection(
                lambda: _Connection(self, origin.key), origin.host, origin.port,
                ssl=self.tls if origin.tls else None, server_hostname=origin.host if origin.tls else None,
                ssl_handshake_timeout=self.connect_timeout if origin.tls else None,
            )
            if self.connect_timeout is None:
                _, conn = await coro
            else:
                _, conn = await asyncio.wait_for(coro, self.connect_timeout)
        except TimeoutError:
            self._lost_one()
            raise httpx.ConnectTimeout(f"connecting to {origin.host}:{origin.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._lost_one()
            raise httpx.ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        except BaseException:
            self._lost_one()
            raise
        conn.counted = True
        if conn.closed:  # closed by the server before we got it
            self._lost_one()
            raise httpx.ConnectError(f"{origin.host}:{origin.port} closed the connection at once")
        return conn

    def _put_back(self, conn: _Connection) -> None:
        if self._closing:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin_key, []).append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._expire)
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        """A connection closed (by us or the server): its place is free."""
        idle = self._idle.get(conn.origin_key)
        if idle and conn in idle:
            idle.remove(conn)
        self._lost_one()

    def _lost_one(self) -> None:
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle_one(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()  # the longest idle
                return True
        return False

    def _expire(self) -> None:
        """Close connections idle for longer than keepalive_expiry."""
        self._sweep = None
        now = time.monotonic()
        left = False
        for idle in list(self._idle.values()):
            for conn in [c for c in idle if now - c.idle_since >= self.keepalive_expiry]:
                conn.close()
            left = left or bool(idle)
        if left and not self._closing:
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive_expiry / 2, self._expire)

    async def aclose(self) -> None:
        self._closing = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


def _head(method: str, origin: _Origin, headers: Mapping[str, str], content: bytes | None) -> bytes:
    """The request line and headers (Host and Content-Length added)."""
    lines = [f"{method} {origin.target} HTTP/1.1\r\nhost: {origin.host_header}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise httpx.LocalProtocolError(f"header {name!r} has a character no header may have")
        lines.append(f"{name}: {value}\r\n")
    if content is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(content) if content else 0}\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise httpx.LocalProtocolError(f"a header is not latin-1: {exc}") from exc
