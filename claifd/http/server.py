"""HTTP/1.1 for the daemon's HTTP listeners: the front (the OpenAI and
Anthropic APIs, `front.py`) and `metrics.listen` (`metrics.py`). One module
serves both; what each answers is its `App`.

HTTP/1.1 is parsed by httptools (llhttp, the parser of uvicorn and Node.js)
in an asyncio protocol, like the main socket's server: an app may answer a
request inline, in `data_received` (the front's cache hits), or in a task of
the daemon's task group. Requests on a kept-alive connection are answered in
order; writes wait while the peer does not read; the request line and
headers, the body and the silence of a connection are bounded (`Limits`).
h11 (pure Python) cost ~50 us a request here, a fifth of a whole round trip
to a do-nothing server (bench/bench_front.py).

Where an app listens: a Unix socket (its peers' credentials are the app's
to check) and/or a TCP address; `HttpServer.want` moves them at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.abc
import httptools
import msgspec
import structlog

__all__ = ["App", "Exchange", "Gone", "HttpServer", "Limits", "parse_listen", "REASONS"]

log = structlog.get_logger("claifd.http")

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 499: "Client Closed Request", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}


# What a web page of an allowed Origin may read of an answer besides the simple headers.
_EXPOSE = (b"access-control-expose-headers: x-claif-request-id, x-claif-cache-status, x-claif-ignored, "
           b"x-claif-fallback, x-should-retry, retry-after\r\n")


class Limits(NamedTuple):
    max_head: int  # the request line and headers, in bytes
    max_body: int
    idle_timeout: float  # a connection silent this long, and not answering, is closed
    # The request line and headers must be in within this, however they trickle (slowloris).
    header_timeout: float = 10.0
    # A body must arrive at least this fast (bytes/s) after the headers' time.
    min_body_rate: int = 64 * 1024
    # Connections open at once; more are closed as they come.
    max_connections: int = 1024
    # Request body bytes buffered over all connections; past it, 503.
    max_buffered: int = 256 * 1024 * 1024


def parse_listen(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) for "127.0.0.1:9464" ("[::1]:9464" for IPv6); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return host.strip("[]"), int(port)


class Exchange:
    """One request on a kept-alive connection, and how its answer is written
    (whole, or as server-sent events in chunked encoding)."""

    __slots__ = ("conn", "method", "path", "headers", "body", "rid", "started", "keep_alive", "t0", "state",
                 "authorized")

    def __init__(self, conn: Connection, method: str, path: str, headers: dict[str, str], body: bytes,
                 rid: str, keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.rid = rid
        self.started = False  # an event stream has begun: its status is sent
        self.keep_alive = keep_alive
        self.t0 = time.perf_counter()  # when the request was in
        self.state: Any = None  # the app's own, while it answers
        self.authorized = False  # the token (or a trusted peer): set by the connection

    def head(self, status: int, headers: list[tuple[str, str]]) -> bytearray:
        out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Status").encode()))
        for name, value in headers:
            out += b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        out += b"x-claif-request-id: %s\r\n" % self.rid.encode()
        origin = self.headers.get("origin")
        if origin is not None:  # admitted, so listed in allowed_origins: a browser may read the answer
            out += b"access-control-allow-origin: %s\r\nvary: Origin\r\n%s" % (origin.encode("latin-1"), _EXPOSE)
        if not self.keep_alive:
            out += b"connection: close\r\n"
        return out

    def response(self, status: int, doc: Any, headers: list[tuple[str, str]],
                 ctype: str = "application/json") -> bytes:
        body = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
        out = self.head(status, [("content-type", ctype), ("content-length", str(len(body))), *headers])
        out += b"\r\n"
        if self.method != "HEAD":
            out += body
        return bytes(out)

    async def respond(self, status: int, doc: Any, headers: list[tuple[str, str]],
                      ctype: str = "application/json") -> None:
        await self.conn.write(self.response(status, doc, headers, ctype))

    async def start_sse(self, headers: list[tuple[str, str]]) -> None:
        self.started = True
        out = self.head(200, [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"),
                              ("transfer-encoding", "chunked"), *headers])
        out += b"\r\n"
        await self.conn.write(bytes(out))

    async def sse(self, data: Any, event: str | None = None) -> None:
        payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
        raw = ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()
        await self.conn.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    async def end(self) -> None:
        """The end of a streamed answer (the last chunk)."""
        await self.conn.write(b"0\r\n\r\n")


class App(Protocol):
    """What an HTTP listener serves."""

    limits: Limits

    def peer_allowed(self, transport: Any) -> bool:
        """Whether the process at the other end of a Unix socket may call."""

    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether a request on TCP (or from a peer not allowed) may be served."""

    def admit(self, headers: dict[str, str], unix: bool) -> tuple[int, str] | None:
        """A refusal (status, why) for a request it never serves, whoever
        asks (a foreign Host or Origin), decided from the headers; None: go on."""

    def request_id(self) -> str: ...

    def inline(self, ex: Exchange, authorized: bool) -> bytes | None:
        """The whole answer at once, without a task (the hot path), or None."""

    async def serve(self, ex: Exchange, authorized: bool, unix: bool) -> None:
        """Answer in a task; raise `Gone` when the peer has left."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a connection's task in the daemon's task group."""


class Gone(Exception):
    """The peer closed the connection."""


class _TooLarge(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: httptools parses, requests are answered in
    order (inline when the app can, else in a task), writes wait while the
    peer does not read.

    What a caller can make it hold is bounded before it is authenticated:
    the headers are judged as soon as they are in (`on_headers_complete`) --
    a foreign Host/Origin, a caller without the token sending a body, or a
    declared body over the limit is answered at once and the connection
    closed, before any body byte is read or `100 Continue` sent -- and an
    unauthenticated request is never kept alive. The head must arrive within
    `header_timeout` and a body at `min_body_rate`. Reading pauses while a
    request is being answered or the peer does not read what was written
    (at most one request waits behind the one in progress)."""

    def __init__(self, server: HttpServer, unix: bool) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.app.limits
        self.unix = unix
        self.trusted = False
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_bytes = 0
        self.queue: deque[Exchange] = deque()
        self.busy = False
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()
        # One timer per connection, re-armed lazily (`_check`): setting a
        # deadline or noting activity is a timestamp, not a timer, on the hot path.
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.active_at = 0.0  # the last bytes received
        # The deadline of the head or the body being received (loop time), what it is for and its length.
        self.deadline_at: float | None = None
        self.deadline_for = ("", 0.0)
        self.authed = False
        self.reading = True
        self.buffered = 0  # body bytes received and not yet handed on

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        if len(self.server.connections) >= self.limits.max_connections:
            self.server.turned_away += 1
            if self.server.turned_away == 1 or self.server.turned_away % 1000 == 0:
                log.warning("HTTP: too many connections; new ones are closed", server=self.server.name,
                            limit=self.limits.max_connections, turned_away=self.server.turned_away)
            transport.close()
            self.closed = True
            return
        self.server.connections.add(self)
        self.trusted = self.app.peer_allowed(transport) if self.unix else False
        if self.unix and not self.trusted:
            log.warning("HTTP: a process of another user was refused", server=self.server.name)
        self._touch()
        self._deadline(self.limits.header_timeout, "request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._release()
        self.writable.set()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        self.writable.clear()
        self._pause()

    def resume_writing(self) -> None:
        self.writable.set()
        if not self.busy:
            self._next()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._touch()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            # A callback's exception reaches here wrapped by the parser.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _TooLarge):
                self._fail(cause.status, str(cause))
            else:
                self._fail(400, f"malformed HTTP request: {exc}")
        except _TooLarge as exc:
            self._fail(exc.status, str(exc))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = bytearray()
        self.head_bytes = 0
        if self.deadline_at is None:
            self._deadline(self.limits.header_timeout, "request headers")

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > self.limits.max_head:
            raise _TooLarge(431, f"request line and headers over {self.limits.max_head} bytes")

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.limits.max_head:
            raise _TooLarge(431, f"request line and headers over {self.limits.max_head} bytes")

    def on_headers_complete(self) -> None:
        """Judge the request from its head, before any of its body is read."""
        headers = self.headers
        refused = self.app.admit(headers, self.unix)
        if refused is not None:
            raise _TooLarge(*refused)
        self.authed = self.trusted or self.app.authorized(headers)
        length = headers.get("content-length", "")
        has_body = (length not in ("", "0")) or "transfer-encoding" in headers
        if not self.authed and has_body:
            raise _TooLarge(401 if not self.unix else 403, "a local token is required (claif token): "
                            "Authorization: Bearer TOKEN or x-api-key: TOKEN" if not self.unix
                            else "this daemon serves its own user only")
        declared = int(length) if length.isdigit() else 0
        if declared > self.limits.max_body:
            raise _TooLarge(413, f"request body of {declared} bytes is over {self.limits.max_body}")
        if has_body:
            allowed = self.limits.header_timeout + (declared or self.limits.max_body) / self.limits.min_body_rate
            self._deadline(allowed, "request body")
        else:
            self._clear_deadline()
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body += body
        self.buffered += len(body)
        self.server.buffered += len(body)
        if len(self.body) > self.limits.max_body:
            raise _TooLarge(413, f"request body over {self.limits.max_body} bytes")
        if self.server.buffered > self.limits.max_buffered:
            raise _TooLarge(503, "the daemon holds too many request bodies at once; retry")

    def on_message_complete(self) -> None:
        self._clear_deadline()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode("latin-1")
        body = bytes(self.body)
        self.body = bytearray()
        self._release()
        # An unauthenticated caller gets its answer and the connection closes.
        ex = Exchange(self, method, path, self.headers, body, self.app.request_id(),
                      self.parser.should_keep_alive() and self.authed)
        ex.authorized = self.authed
        self.queue.append(ex)
        if not self.busy:
            self._next()
        if self.busy or self.queue:
            self._pause()  # flow control: no more requests read while this one is answered

    # answering
    def _next(self) -> None:
        while self.queue and not self.closed:
            if not self.writable.is_set():
                self._pause()  # the peer reads nothing: answer no more until it does
                return
            ex = self.queue.popleft()
            authorized = ex.authorized  # (judged from its headers, as they came in)
            answer = self.app.inline(ex, authorized)
            if answer is not None:
                assert self.transport is not None
                self.transport.write(answer)
                if not ex.keep_alive:
                    self.transport.close()
                    return
                continue
            self.busy = True
            self.app.spawn(self._answer(ex, authorized))
            return
        if not self.busy and not self.queue:
            self._resume()

    def _pause(self) -> None:
        if self.reading and self.transport is not None and not self.transport.is_closing():
            self.reading = False
            self.transport.pause_reading()

    def _resume(self) -> None:
        if not self.reading and self.transport is not None and not self.transport.is_closing():
            self.reading = True
            self.transport.resume_reading()

    def _release(self) -> None:
        self.server.buffered -= self.buffered
        self.buffered = 0

    def _deadline(self, seconds: float, what: str) -> None:
        self.deadline_at = at = self.loop.time() + seconds
        self.deadline_for = (what, seconds)
        self._arm(at)

    def _clear_deadline(self) -> None:
        self.deadline_at = None

    def _arm(self, at: float) -> None:
        """The timer fires by `at` (a timer already due sooner stays)."""
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self._check)

    def _check(self) -> None:
        """The timer: a deadline passed (408), or silence past the idle
        timeout while not answering (closed); else armed for what is next."""
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        if self.deadline_at is not None and now >= self.deadline_at:
            what, seconds = self.deadline_for
            self.deadline_at = None
            self.server.too_slow += 1
            self._fail(408, f"{what} not received within {seconds:g} s")
            return
        idle_at = self.active_at + self.limits.idle_timeout
        if now >= idle_at:
            if not self.busy and self.transport is not None:
                self.transport.close()
                return
            idle_at = now + self.limits.idle_timeout  # answering: look again later
        self._arm(idle_at if self.deadline_at is None else min(idle_at, self.deadline_at))

    async def _answer(self, ex: Exchange, authorized: bool) -> None:
        try:
            await self.app.serve(ex, authorized, self.unix)
        except (ConnectionError, Gone):
            self.closed = True
        finally:
            self.busy = False
            if self.closed or not ex.keep_alive:
                if self.transport is not None:
                    self.transport.close()
            else:
                self._next()

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise Gone
        self.transport.write(data)
        if not self.writable.is_set():
            await self.writable.wait()
            if self.closed:
                raise Gone

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error"}})
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, REASONS.get(status, "Error").encode(),
                                                                     len(body), body))
            self.transport.close()

    def _touch(self) -> None:
        self.active_at = self.loop.time()


class HttpServer:
    """The listeners of one app: a Unix socket and/or a TCP address, opened
    in the daemon's task group and moved when `want` is told new ones (the
    old ones close at once, their connections with them)."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name
        self.socket_path: str | None = None
        self.address: str | None = None  # "HOST:PORT" listened on (the port resolved when 0)
        self.connections: set[Connection] = set()
        self.buffered = 0  # request body bytes held over all connections
        self.turned_away = 0  # connections closed at once: over `max_connections`
        self.too_slow = 0  # connections closed: head or body past its deadline
        self.error: str | None = None  # why a wanted listener is not open (status, health)
        self._wanted: tuple[str, str] = ("", "")
        self._scope: anyio.CancelScope | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._opened = anyio.Event()

    def __repr__(self) -> str:
        return f"<HttpServer {self.name} socket={self.socket_path} listen={self.address}>"

    async def start(self, task_group: anyio.abc.TaskGroup, path: str, listen: str) -> None:
        """Listen, and wait (up to 5 s) until the listeners are open or failed."""
        self._task_group = task_group
        self.want(path, listen)
        if path or listen:
            with anyio.move_on_after(5):
                await self._opened.wait()

    def want(self, path: str, listen: str) -> None:
        """Listen on these ("" for neither: closed)."""
        wanted = (path, listen)
        if wanted == self._wanted:
            return
        self._wanted = wanted
        self.error = None
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            log.info("HTTP listener closed", server=self.name, socket=self.socket_path, listen=self.address)
            self.socket_path = self.address = None
        if (path or listen) and self._task_group is not None:
            self._opened = anyio.Event()
            scope = self._scope = anyio.CancelScope()
            self._task_group.start_soon(self._open, path, listen, scope)

    def can_listen(self, listen: Any) -> str | None:
        """Why `listen` ("HOST:PORT") cannot be listened on (a port another
        process holds, an address not of this machine), or None: asked before
        a config change is accepted, so a clash is refused, not applied."""
        if not listen or listen == self.address:
            return None
        try:
            host, port = parse_listen(str(listen))
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener will
                probe.bind(address)
        except (OSError, ValueError) as exc:
            return f"cannot listen on {listen}: {getattr(exc, 'strerror', None) or exc}"
        return None

    async def _open(self, path: str, listen: str, scope: anyio.CancelScope) -> None:
        """Each listener on its own: a TCP port another process holds does not
        take the Unix socket down with it; what failed is `error`."""
        loop = asyncio.get_running_loop()
        servers: list[asyncio.AbstractServer] = []
        errors: list[str] = []
        with scope:
            try:
                if path:
                    try:
                        if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
                            os.unlink(path)  # ours, from an earlier run (the daemon's lock guards the directory)
                        servers.append(await loop.create_unix_server(lambda: Connection(self, unix=True), path))
                        os.chmod(path, 0o600)
                        self.socket_path = path
                    except OSError as exc:
                        errors.append(f"cannot listen on {path}: {exc.strerror or exc}")
                if listen:
                    try:
                        host, port = parse_listen(listen)
                        server = await loop.create_server(lambda: Connection(self, unix=False), host, port)
                        servers.append(server)
                        self.address = f"{host}:{server.sockets[0].getsockname()[1]}"
                    except (OSError, ValueError) as exc:
                        errors.append(f"cannot listen on {listen}: {getattr(exc, 'strerror', None) or exc}")
                if errors:
                    self.error = "; ".join(errors)
                    log.error("cannot listen", server=self.name, error=self.error)
                if servers:
                    log.info("HTTP listening", server=self.name, socket=self.socket_path, listen=self.address)
                self._opened.set()
                await anyio.sleep_forever()
            finally:
                self._opened.set()
                for listening in servers:
                    listening.close()
                for conn in list(self.connections):
                    if conn.transport is not None:
                        conn.transport.close()
                if self.socket_path:
                    with contextlib.suppress(OSError):
                        os.unlink(self.socket_path)
