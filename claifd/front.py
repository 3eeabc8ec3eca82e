"""The HTTP front: the OpenAI and Anthropic HTTP APIs, served by the daemon
on the one completion pipeline, so the official SDKs, curl and agent tools
use the daemon's cache, pool and sessions by changing a base URL.

    POST /v1/chat/completions      OpenAI Chat Completions (JSON; SSE with "stream": true)
    POST /v1/messages              Anthropic Messages (JSON; SSE, the documented event sequence)
    POST /v1/messages/count_tokens passed through to Anthropic
    GET  /v1/models                both shapes (Anthropic's when anthropic-version is sent)
    GET  /metrics, GET /health     as `metrics.listen`

Any model through either wire: a request is read into the daemon's shape
(claif_client/wire.py), routed like any other, and the answer written in the shape it
was asked in. Errors come in each API's own body and status, so the SDKs
raise their own classes (400 BadRequestError ... 429 RateLimitError with
retry-after, 504 on a timeout).

Where it listens (`server.http.*`, off by default): a Unix socket beside the
daemon's (peer credentials checked as on the main socket), and optionally a
loopback TCP port whose callers present the local token (`claif token`:
`Authorization: Bearer T` or `x-api-key: T`). Provider keys never leave the
daemon.

Per request, headers steer the cache: `x-claif-cache: use|refresh|bypass|only`,
`x-claif-namespace`, `x-claif-ttl`, `x-claif-session`; every answer carries
`x-claif-cache-status: hit-exact|hit-semantic|coalesced|miss` and
`x-claif-request-id`.

HTTP/1.1 parsed by httptools (llhttp, the parser of uvicorn and Node.js) in
an asyncio protocol, like the main socket's server: a cache hit is answered
inline in `data_received`, anything else in a task of the daemon's task
group. h11 (pure Python) cost ~50 us a request here, a fifth of a whole
round trip to a do-nothing server; see bench/bench_front.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import os
import secrets
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import httptools
import msgspec
import structlog

from claif_client.protocol import CacheControl, CompletionRequest, CompletionResponse
from claif_client.wire import (
    FINISH_REASONS,
    WireError,
    anthropic_blocks,
    anthropic_request,
    anthropic_response,
    choice_request,
    openai_choices,
    openai_request,
    openai_response,
    tool_calls_of,
)

from .completions import Completions, Prepared
from .config import HttpFrontConfig
from .errors import error_info
from .metrics_http import parse_listen
from .monitoring import CONTENT_TYPE
from .providers import resolve_model
from .server import peer_ids
from .types import DeltaCallback

__all__ = ["HttpFront", "load_token", "TOKEN_FILE"]

log = structlog.get_logger("claifd.front")

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT = 300.0
TOKEN_FILE = "http-token"

# The daemon's error codes, as HTTP statuses (an upstream's own status wins).
_STATUS = {"bad_request": 400, "not_found": 404, "not_configured": 401, "rate_limited": 429, "timeout": 504,
           "shutting_down": 503, "storage_error": 500, "upstream_error": 502, "tls_error": 502, "cancelled": 499, "internal": 500}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error", 503: "overloaded_error"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_exceeded"}
_COMPLETION_PATHS = ("/v1/chat/completions", "/v1/messages")
# A refusal decided in the front, as the daemon's error code (for the metrics).
_REPLY_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
_OUTCOME_STATUS = {"cached-exact": "hit-exact", "cached-semantic": "hit-semantic", "coalesced": "coalesced"}
# OpenAI-only request fields an Anthropic model cannot take: dropped (and named
# in x-claif-ignored) when the request crosses wires.
_OPENAI_ONLY = ("seed", "user", "response_format", "logprobs", "top_logprobs", "presence_penalty",
                "frequency_penalty", "logit_bias", "parallel_tool_calls", "service_tier", "reasoning_effort",
                "modalities", "prediction", "audio", "web_search_options")


def load_token(config_dir: Path) -> str:
    """The local token callers of the TCP listener present; made (0600) on first use."""
    path = config_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = "claif-" + secrets.token_urlsafe(32)
        tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
        return token
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{path} must be a regular file of ours, mode 0600")
        return f.read().strip()


class _Reply(Exception):
    """A complete HTTP answer decided before any byte was sent."""

    def __init__(self, status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc
        self.headers = headers or []


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large", 499: "Client Closed Request",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
            529: "Overloaded"}


class _Ask(NamedTuple):
    """A completion request read from either wire, in the daemon's shape,
    with the x-claif-* headers applied."""

    request: CompletionRequest
    stream: bool
    n: int = 1
    include_usage: bool = False
    ignored: tuple[str, ...] = ()  # OpenAI-only fields the target cannot take


class _Exchange:
    """One request on a kept-alive connection, and how its answer is written."""

    __slots__ = ("conn", "method", "path", "headers", "body", "rid", "started", "keep_alive", "prepared", "ask",
                 "t0", "recorded")

    def __init__(self, conn: _Connection, method: str, path: str, headers: dict[str, str], body: bytes,
                 rid: str, keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.rid = rid
        self.started = False
        self.keep_alive = keep_alive
        # Set by the inline attempt, so a miss is not read, translated and
        # prepared twice: the request in the daemon's shape, then prepared.
        self.ask: _Ask | None = None
        self.prepared: Prepared | None = None
        self.t0 = time.perf_counter()
        # The pipeline has the request (it records it in the metrics).
        self.recorded = False

    @property
    def anthropic(self) -> bool:
        return self.path.startswith("/v1/messages") or (self.path == "/v1/models"
                                                        and "anthropic-version" in self.headers)

    def head(self, status: int, headers: list[tuple[str, str]]) -> bytearray:
        out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status").encode()))
        for name, value in headers:
            out += b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        out += b"x-claif-request-id: %s\r\n" % self.rid.encode()
        if not self.keep_alive:
            out += b"connection: close\r\n"
        return out

    def response(self, status: int, doc: Any, headers: list[tuple[str, str]],
                 ctype: str = "application/json") -> bytes:
        body = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
        out = self.head(status, [("content-type", ctype), ("content-length", str(len(body))), *headers])
        out += b"\r\n"
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


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: httptools parses, requests are answered in
    order (a cache hit inline, in `data_received`; anything else in a task),
    writes wait while the peer does not read."""

    def __init__(self, front: HttpFront, unix: bool) -> None:
        self.front = front
        self.unix = unix
        self.trusted = False
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_bytes = 0
        self.queue: deque[_Exchange] = deque()
        self.busy = False
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.idle: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        self.front.connections.add(self)
        self.trusted = self.front.peer_allowed(transport) if self.unix else False
        if self.unix and not self.trusted:
            log.warning("HTTP front: a process of another user was refused")
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.connections.discard(self)
        self.writable.set()
        if self.idle is not None:
            self.idle.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
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

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count(len(name) + len(value))

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD:
            raise _TooLarge(431, f"request line and headers over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_BODY:
            raise _TooLarge(413, f"request body over {MAX_BODY} bytes")

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode("latin-1")
        ex = _Exchange(self, method, path, self.headers, bytes(self.body), self.front.request_id(),
                       self.parser.should_keep_alive())
        self.queue.append(ex)
        if not self.busy:
            self._next()

    # answering
    def _next(self) -> None:
        while self.queue and not self.closed:
            ex = self.queue.popleft()
            authorized = self.trusted or self.front.token_ok(ex.headers)
            answer = self.front.inline(ex, authorized)
            if answer is not None:
                assert self.transport is not None
                self.transport.write(answer)
                if not ex.keep_alive:
                    self.transport.close()
                    return
                continue
            self.busy = True
            self.front.spawn(self._answer, ex, authorized)
            return

    async def _answer(self, ex: _Exchange, authorized: bool) -> None:
        try:
            await self.front.serve(ex, authorized, self.unix)
        except (ConnectionError, _Gone):
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
            raise _Gone
        self.transport.write(data)
        if not self.writable.is_set():
            await self.writable.wait()
            if self.closed:
                raise _Gone

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error"}})
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, "Error").encode(),
                                                                     len(body), body))
            self.transport.close()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(IDLE_TIMEOUT, self._idle_out)

    def _idle_out(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()


class _Gone(Exception):
    """The peer closed the connection."""


class _TooLarge(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpFront:
    def __init__(self, completions: Completions, models: Callable[[], Awaitable[dict[str, Any]]],
                 metrics: Callable[[], str], health: Callable[[], Awaitable[dict[str, Any]]],
                 allowed_uids: Callable[[], frozenset[int]], count_tokens: Callable[[bytes], Awaitable[tuple[int, bytes]]],
                 config_dir: Path) -> None:
        self.completions = completions
        self.models = models
        self.metrics = metrics
        self.health = health
        self.allowed_uids = allowed_uids
        self.count_tokens = count_tokens
        self.config_dir = config_dir
        self.token: str | None = None
        self.socket_path: str | None = None
        self.address: str | None = None
        self.served = 0
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._wanted: tuple[bool, str, str] = (False, "", "")
        self._default_socket = ""
        self.connections: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"<HttpFront socket={self.socket_path} listen={self.address} served={self.served}>"

    def info(self) -> dict[str, Any]:
        return {"enabled": self._wanted[0], "socket": self.socket_path, "listen": self.address,
                "token_file": str(self.config_dir / TOKEN_FILE) if self.token else None, "served": self.served}

    # ------------------------------------------------------------ listeners

    async def start(self, task_group: anyio.abc.TaskGroup, config: HttpFrontConfig, default_socket: str) -> None:
        self._task_group = task_group
        self._default_socket = default_socket
        self.reconfigure(config)
        if config.enabled:
            with anyio.move_on_after(5):
                while self._scope is not None and self.socket_path is None and self.address is None:
                    await anyio.sleep(0.01)

    def reconfigure(self, config: HttpFrontConfig) -> None:
        wanted = (bool(config.enabled), config.socket or self._default_socket, config.listen)
        if wanted == self._wanted:
            return
        self._wanted = wanted
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            log.info("HTTP front closed", socket=self.socket_path, listen=self.address)
            self.socket_path = self.address = None
        if wanted[0] and self._task_group is not None:
            scope = self._scope = anyio.CancelScope()
            self._task_group.start_soon(self._open, wanted, scope)

    async def _open(self, wanted: tuple[bool, str, str], scope: anyio.CancelScope) -> None:
        _, path, listen = wanted
        loop = asyncio.get_running_loop()
        servers: list[asyncio.AbstractServer] = []
        with scope:
            try:
                self.token = load_token(self.config_dir)
            except OSError as exc:
                log.error("cannot read or make the HTTP front's token; the TCP listener stays closed",
                          error=str(exc))
                listen = ""
            try:
                if path:
                    if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)  # ours, from an earlier run (the daemon's lock guards the directory)
                    servers.append(await loop.create_unix_server(lambda: _Connection(self, unix=True), path))
                    os.chmod(path, 0o600)
                    self.socket_path = path
                if listen:
                    host, port = parse_listen(listen)
                    server = await loop.create_server(lambda: _Connection(self, unix=False), host, port)
                    servers.append(server)
                    self.address = f"{host}:{server.sockets[0].getsockname()[1]}"
                log.info("HTTP front listening", socket=self.socket_path, listen=self.address)
                await anyio.sleep_forever()
            except (OSError, ValueError) as exc:
                log.error("cannot serve the HTTP front", socket=path, listen=listen, error=str(exc))
            finally:
                for listening in servers:
                    listening.close()
                for conn in list(self.connections):
                    if conn.transport is not None:
                        conn.transport.close()
                if self.socket_path:
                    with contextlib.suppress(OSError):
                        os.unlink(self.socket_path)

    # ---------------------------------------------------------- connections

    def peer_allowed(self, transport: Any) -> bool:
        """The main socket's rule: the daemon's own uid and `server.allowed_uids`."""
        try:
            _, uid = peer_ids(transport.get_extra_info("socket"))
        except OSError:
            return False
        return uid in self.allowed_uids()

    def token_ok(self, headers: dict[str, str]) -> bool:
        token = self.token
        if not token:
            return False
        offered = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(offered.encode(), token.encode())

    def request_id(self) -> str:
        self.served += 1
        return f"req_{self._prefix}{next(self._ids):x}"

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self.completions.state.tasks.spawn(fn(*args))

    def inline(self, ex: _Exchange, authorized: bool) -> bytes | None:
        """A memory-tier hit answered at once, without a task (the hot path);
        None: the request is answered in a task (`serve`)."""
        if not authorized or ex.method != "POST" or "x-claif-session" in ex.headers:
            return None
        started = ex.t0
        try:
            if ex.path == "/v1/chat/completions":
                ask = self._read_chat(ex)
            elif ex.path == "/v1/messages":
                ask = self._read_messages(ex)
            else:
                return None
            if ask.stream or ask.n > 1:
                return None
            prepared = ex.prepared = self.completions.prepare(ask.request)
        except Exception:
            return None  # answered (with its error) by `serve`
        entry = self.completions.try_hit(prepared, started)
        if entry is None:
            return None
        ex.recorded = True
        response = entry.response()
        if prepared.optimized is not None:
            response = msgspec.structs.replace(response, optimized=prepared.optimized)
        model = ask.request.model or response.model
        headers = [("x-claif-cache-status", "hit-exact")]
        if ex.path == "/v1/chat/completions":
            if ask.ignored:
                headers.append(("x-claif-ignored", ",".join(ask.ignored)))
            doc = openai_response(response, model, "chatcmpl-" + ex.rid, int(time.time()))
        else:
            doc = anthropic_response(response, model, "msg_" + ex.rid)
        return ex.response(200, doc, headers)

    async def serve(self, ex: _Exchange, authorized: bool, unix: bool) -> None:
        try:
            if not authorized:
                raise _Reply(401 if not unix else 403, self._error_doc(
                    ex, 401 if not unix else 403,
                    "a local token is required (claif token): Authorization: Bearer TOKEN or x-api-key: TOKEN"
                    if not unix else "this daemon serves its own user only"))
            await self._route(ex)
        except _Reply as reply:
            self._refused(ex, _REPLY_CODES.get(reply.status, "bad_request"))
            await ex.respond(reply.status, reply.doc, reply.headers)
        except _Gone:
            raise
        except Exception as exc:
            self._refused(ex, error_info(exc).code)
            await self._fail(ex, exc)

    def _refused(self, ex: _Exchange, code: str) -> None:
        """A completion request that failed before the pipeline had it is
        counted too (the pipeline records the rest)."""
        if not ex.recorded and ex.method == "POST" and ex.path in _COMPLETION_PATHS:
            ex.recorded = True
            self.completions.refused(code, ex.t0)

    async def _fail(self, ex: _Exchange, exc: BaseException) -> None:
        info = error_info(exc)
        if info.code == "internal":
            log.error("HTTP front request failed", path=ex.path, exc_info=exc)
        status = _STATUS.get(info.code, 500)
        upstream = (info.details or {}).get("status")
        if info.code == "upstream_error" and isinstance(upstream, int) and 400 <= upstream < 600:
            status = upstream
        if ex.started:  # mid-stream: an error event in the stream's own shape
            doc = self._error_doc(ex, status, info.message)
            await ex.sse(doc, "error" if ex.anthropic else None)
            await ex.end()
            return
        headers = [("retry-after", f"{info.retry_after:g}")] if info.retry_after is not None else []
        await ex.respond(status, self._error_doc(ex, status, info.message), headers)

    @staticmethod
    def _error_doc(ex: _Exchange, status: int, message: str) -> dict[str, Any]:
        if ex.anthropic:
            return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    # -------------------------------------------------------------- routes

    async def _route(self, ex: _Exchange) -> None:
        method, path = ex.method, ex.path
        if method == "POST" and path == "/v1/chat/completions":
            await self._chat(ex)
        elif method == "POST" and path == "/v1/messages":
            await self._messages(ex)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            status, body = await self.count_tokens(ex.body)
            await ex.respond(status, body, [])
        elif method == "GET" and path == "/v1/models":
            await ex.respond(200, await self._models(ex), [])
        elif method == "GET" and path == "/metrics":
            await ex.respond(200, self.metrics().encode(), [], CONTENT_TYPE)
        elif method == "GET" and path == "/health":
            doc = await self.health()
            await ex.respond(503 if doc["status"] == "unhealthy" else 200, doc, [])
        else:
            raise _Reply(404, self._error_doc(ex, 404, f"no route for {method} {path}"))

    async def _models(self, ex: _Exchange) -> dict[str, Any]:
        listing = await self.models()
        ids = [m["id"] for m in listing["models"]]
        if ex.anthropic:
            data = [{"type": "model", "id": i, "display_name": i, "created_at": "1970-01-01T00:00:00Z"} for i in ids]
            return {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                    "last_id": ids[-1] if ids else None}
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": i.split("/")[0]}
                                           for i in ids]}

    def _decode(self, ex: _Exchange) -> Any:
        try:
            return msgspec.json.decode(ex.body)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _Reply(400, self._error_doc(ex, 400, f"the body is not JSON: {exc}")) from None

    def _read_chat(self, ex: _Exchange) -> _Ask:
        """An OpenAI chat request, read once per exchange."""
        if ex.ask is None:
            try:
                chat = openai_request(self._decode(ex))
            except WireError as exc:
                raise _Reply(400, self._error_doc(ex, 400, str(exc))) from None
            request, ignored = self._steer(ex, chat.request, "openai")
            ex.ask = _Ask(request, chat.stream, chat.n, chat.include_usage, tuple(ignored))
        return ex.ask

    def _read_messages(self, ex: _Exchange) -> _Ask:
        """An Anthropic Messages request, read once per exchange."""
        if ex.ask is None:
            try:
                request, stream = anthropic_request(self._decode(ex))
            except WireError as exc:
                raise _Reply(400, self._error_doc(ex, 400, str(exc))) from None
            if request.max_tokens is None:
                raise _Reply(400, self._error_doc(ex, 400, "max_tokens: Field required"))
            ex.ask = _Ask(self._steer(ex, request, "anthropic")[0], stream)
        return ex.ask

    def _steer(self, ex: _Exchange, request: CompletionRequest, wire: str) -> tuple[CompletionRequest, list[str]]:
        """Apply the x-claif-* headers; drop what the target's wire cannot take."""
        h = ex.headers
        mode, namespace, ttl = h.get("x-claif-cache"), h.get("x-claif-namespace"), h.get("x-claif-ttl")
        changes: dict[str, Any] = {}
        if mode or namespace or ttl:
            try:
                changes["cache"] = CacheControl(mode=mode or "use", namespace=namespace or None,
                                                ttl=float(ttl) if ttl else None)
            except ValueError:
                raise _Reply(400, self._error_doc(ex, 400, f"x-claif-ttl must be seconds, got {ttl!r}")) from None
        if h.get("x-claif-session"):
            changes["session"] = h["x-claif-session"]
        ignored: list[str] = []
        if wire == "openai" and request.extra and self._provider_of(request) != "openai":
            ignored = [k for k in request.extra if k in _OPENAI_ONLY]
            kept = {k: v for k, v in request.extra.items() if k not in _OPENAI_ONLY}
            changes["extra"] = kept or None
        if changes:
            request = msgspec.structs.replace(request, **changes)
        return request, ignored

    def _provider_of(self, request: CompletionRequest) -> str:
        config = self.completions.config
        name = request.model or config.client.model
        return "" if name == "auto" else resolve_model(name, config.client.model, config.models)[0]

    async def _run(self, ex: _Exchange, request: CompletionRequest, on_delta: DeltaCallback | None,
                   outcome: list[Prepared] | None = None,
                   prepared: Prepared | None = None) -> tuple[CompletionResponse, str]:
        """The completion (streamed through `on_delta` when given) on the one
        pipeline, and its x-claif-cache-status. `outcome` gets the prepared
        request, whose outcome a stream's headers report before the answer
        is complete."""
        completions = self.completions
        ex.recorded = True
        if request.session is not None:
            response, _ = await completions.session_send(request, on_delta)
            return response, _cache_status(response, "ok")
        try:
            if prepared is None:
                prepared = completions.prepare(request)
        except Exception as exc:
            completions.refused(error_info(exc).code, ex.t0)
            raise
        if outcome is not None:
            outcome.append(prepared)
        with anyio.fail_after(prepared.timeout):
            response = await completions.run(prepared, on_delta, memory_probed=prepared is ex.prepared)
        return response, _cache_status(response, prepared.outcome)

    # ------------------------------------------------------------- OpenAI

    async def _chat(self, ex: _Exchange) -> None:
        ask = self._read_chat(ex)
        request = ask.request
        model = request.model or ""
        extra = [("x-claif-ignored", ",".join(ask.ignored))] if ask.ignored else []
        rid = "chatcmpl-" + ex.rid
        created = int(time.time())
        requests = [choice_request(request, i) for i in range(ask.n)]
        responses: list[CompletionResponse | None] = [None] * ask.n
        if not ask.stream:
            status = "miss"

            async def run(i: int) -> None:
                nonlocal status
                responses[i], got = await self._run(ex, requests[i], None, prepared=ex.prepared if i == 0 else None)
                if i == 0:
                    status = got

            await _each(ask.n, run)
            done = [r for r in responses if r is not None]
            await ex.respond(200, openai_choices(done, model or done[0].model, rid, created),
                             [("x-claif-cache-status", status), *extra])
            return

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            doc: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "system_fingerprint": None,
                                   "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]}
            if ask.include_usage:
                doc["usage"] = None
            return doc

        outcome: list[Prepared] = []
        opened: set[int] = set()

        async def begin(index: int) -> None:
            if not ex.started:
                await ex.start_sse([("x-claif-cache-status", _streamed_status(outcome)), *extra])
            if index not in opened:
                opened.add(index)
                await ex.sse(chunk(index, {"role": "assistant", "content": "", "refusal": None}))

        async def run_streamed(i: int) -> None:
            async def on_delta(text: str) -> None:
                await begin(i)
                await ex.sse(chunk(i, {"content": text}))

            response, _ = await self._run(ex, requests[i], on_delta, outcome if i == 0 else None)
            responses[i] = response
            await begin(i)
            calls = tool_calls_of(response)
            if calls:
                await ex.sse(chunk(i, {"tool_calls": [{"index": j, **c} for j, c in enumerate(calls)]}))
            await ex.sse(chunk(i, {}, FINISH_REASONS.get(response.stop_reason or "end_turn", "stop")))

        await _each(ask.n, run_streamed)
        if ask.include_usage:
            done = [r for r in responses if r is not None]
            usage = openai_choices(done, model, rid, created)["usage"]
            await ex.sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "system_fingerprint": None, "choices": [], "usage": usage})
        await ex.sse("[DONE]")
        await ex.end()

    # ---------------------------------------------------------- Anthropic

    async def _messages(self, ex: _Exchange) -> None:
        ask = self._read_messages(ex)
        request = ask.request
        model = request.model or ""
        rid = "msg_" + ex.rid
        if not ask.stream:
            response, status = await self._run(ex, request, None, prepared=ex.prepared)
            await ex.respond(200, anthropic_response(response, model or response.model, rid),
                             [("x-claif-cache-status", status)])
            return
        index = 0
        text_open = False
        outcome: list[Prepared] = []

        async def begin() -> None:
            if not ex.started:
                await ex.start_sse([("x-claif-cache-status", _streamed_status(outcome))])
                await ex.sse({"type": "message_start", "message": {
                    "id": rid, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}, "message_start")

        async def on_delta(text: str) -> None:
            nonlocal text_open
            await begin()
            if not text_open:
                text_open = True
                await ex.sse({"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}}, "content_block_start")
                await ex.sse({"type": "ping"}, "ping")
            await ex.sse({"type": "content_block_delta", "index": 0,
                          "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

        response, _ = await self._run(ex, request, on_delta, outcome)
        await begin()
        if text_open:
            await ex.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            index = 1
        for block in anthropic_blocks(response):
            if block.get("type") != "tool_use":
                continue
            await ex.sse({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block.get("id", ""), "name": block.get("name", ""), "input": {}}},
                "content_block_start")
            await ex.sse({"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": msgspec.json.encode(block.get("input", {})).decode()}},
                "content_block_delta")
            await ex.sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        await ex.sse({"type": "message_delta", "delta": {"stop_reason": response.stop_reason or "end_turn",
                                                         "stop_sequence": None},
                      "usage": {"input_tokens": response.usage.input_tokens,
                                "output_tokens": response.usage.output_tokens}}, "message_delta")
        await ex.sse({"type": "message_stop"}, "message_stop")
        await ex.end()


async def _each(n: int, run: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """run(0) .. run(n-1), concurrently when n > 1 (the first failure fails them all)."""
    if n == 1:
        await run(0)
        return
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)


def _streamed_status(outcome: list[Prepared]) -> str:
    return _OUTCOME_STATUS.get(outcome[0].outcome, "miss") if outcome else "miss"


def _cache_status(response: CompletionResponse, outcome: str) -> str:
    if outcome in _OUTCOME_STATUS:
        return _OUTCOME_STATUS[outcome]
    if response.cached:
        return "hit-exact" if response.cached == "exact" else "hit-semantic"
    return "miss"

