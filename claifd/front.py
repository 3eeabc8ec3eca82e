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

HTTP/1.1 with h11 (already a dependency) on anyio listeners in the daemon's
task group, as `metrics_http.py`; see bench/bench_front.py for its cost.
"""

from __future__ import annotations

import hmac
import itertools
import os
import secrets
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec
import structlog

from claif_client.protocol import CacheControl, CompletionRequest, CompletionResponse
from claif_client.wire import (
    FINISH_REASONS,
    WireError,
    anthropic_blocks,
    anthropic_request,
    anthropic_response,
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

__all__ = ["HttpFront", "load_token", "TOKEN_FILE"]

log = structlog.get_logger("claifd.front")

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT = 300.0
TOKEN_FILE = "http-token"
_UCRED = struct.calcsize("3i")

# The daemon's error codes, as HTTP statuses (an upstream's own status wins).
_STATUS = {"bad_request": 400, "not_found": 404, "not_configured": 401, "rate_limited": 429, "timeout": 504,
           "shutting_down": 503, "storage_error": 500, "upstream_error": 502, "cancelled": 499, "internal": 500}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error", 503: "overloaded_error"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_exceeded"}
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


class _Exchange:
    """One request on a kept-alive connection."""

    __slots__ = ("conn", "stream", "method", "path", "headers", "body", "rid", "started")

    def __init__(self, conn: h11.Connection, stream: anyio.abc.ByteStream, request: h11.Request, body: bytes,
                 rid: str) -> None:
        self.conn = conn
        self.stream = stream
        self.method = request.method.decode("latin-1")
        self.path = request.target.decode("latin-1").split("?", 1)[0]
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        self.body = body
        self.rid = rid
        self.started = False

    @property
    def anthropic(self) -> bool:
        return self.path.startswith("/v1/messages") or (self.path == "/v1/models"
                                                        and "anthropic-version" in self.headers)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send(data)

    async def respond(self, status: int, doc: Any, headers: list[tuple[str, str]], ctype: str = "application/json",
                      ) -> None:
        body = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
        await self.send(h11.Response(status_code=status, headers=[
            ("content-type", ctype), ("content-length", str(len(body))), ("x-claif-request-id", self.rid),
            *headers]))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def start_sse(self, headers: list[tuple[str, str]]) -> None:
        self.started = True
        await self.send(h11.Response(status_code=200, headers=[
            ("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"),
            ("x-claif-request-id", self.rid), *headers]))

    async def sse(self, data: Any, event: str | None = None) -> None:
        payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
        await self.send(h11.Data(data=((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()))


class HttpFront:
    def __init__(self, completions: Completions, models: Callable[[], Awaitable[dict[str, Any]]],
                 metrics: Callable[[], str], health: Callable[[], Awaitable[dict[str, Any]]],
                 allowed_uids: Callable[[], list[int]], count_tokens: Callable[[bytes], Awaitable[tuple[int, bytes]]],
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
        with scope:
            try:
                self.token = load_token(self.config_dir)
            except OSError as exc:
                log.error("cannot read or make the HTTP front's token; the TCP listener stays closed",
                          error=str(exc))
                listen = ""
            async with anyio.create_task_group() as tg:
                if path:
                    tg.start_soon(self._unix, path)
                if listen:
                    tg.start_soon(self._tcp, listen)

    async def _unix(self, path: str) -> None:
        try:
            if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # ours, from an earlier run (the daemon's lock guards the directory)
            listener = await anyio.create_unix_listener(path)
            os.chmod(path, 0o600)
        except OSError as exc:
            log.error("cannot serve the HTTP front on a Unix socket", path=path, error=str(exc))
            return
        self.socket_path = path
        log.info("HTTP front listening", socket=path)
        try:
            async with listener:
                await listener.serve(lambda s: self._connection(s, trusted=False, unix=True))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    async def _tcp(self, listen: str) -> None:
        try:
            host, port = parse_listen(listen)
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except (OSError, ValueError) as exc:
            log.error("cannot serve the HTTP front on TCP", listen=listen, error=str(exc))
            return
        self.address = f"{host}:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
        log.info("HTTP front listening", listen=self.address)
        async with listener:
            await listener.serve(lambda s: self._connection(s, trusted=False, unix=False))

    # ---------------------------------------------------------- connections

    def _peer_allowed(self, stream: anyio.abc.ByteStream) -> bool:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED))
        except OSError:
            return False
        return uid == os.getuid() or uid in self.allowed_uids()

    async def _connection(self, stream: anyio.abc.ByteStream, trusted: bool, unix: bool) -> None:
        if unix:
            trusted = self._peer_allowed(stream)
            if not trusted:
                log.warning("HTTP front: a process of another user was refused")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with stream:
                while True:
                    got = await self._read_request(conn, stream)
                    if got is None:
                        return
                    request, body = got
                    ex = _Exchange(conn, stream, request, body, f"req_{self._prefix}{next(self._ids):x}")
                    await self._serve(ex, trusted or self._token_ok(ex.headers), unix)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
        except (h11.ProtocolError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError,
                OSError, TimeoutError):
            return

    def _token_ok(self, headers: dict[str, str]) -> bool:
        token = self.token
        if not token:
            return False
        offered = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(offered.encode(), token.encode())

    async def _read_request(self, conn: h11.Connection,
                            stream: anyio.abc.ByteStream) -> tuple[h11.Request, bytes] | None:
        request = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with anyio.fail_after(IDLE_TIMEOUT):
                    try:
                        data = await stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return (request, bytes(body)) if request is not None else None
            else:
                return None

    async def _serve(self, ex: _Exchange, authorized: bool, unix: bool) -> None:
        self.served += 1
        try:
            if not authorized:
                raise _Reply(401 if not unix else 403, self._error_doc(
                    ex, 401 if not unix else 403,
                    "a local token is required (claif token): Authorization: Bearer TOKEN or x-api-key: TOKEN"
                    if not unix else "this daemon serves its own user only"))
            await self._route(ex)
        except _Reply as reply:
            await ex.respond(reply.status, reply.doc, reply.headers)
        except Exception as exc:
            await self._fail(ex, exc)

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
            await ex.send(h11.EndOfMessage())
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

    async def _run(self, request: CompletionRequest, stream: bool, on_delta: Callable[[str], Awaitable[None]],
                   outcome: list[Prepared] | None = None) -> tuple[CompletionResponse, str]:
        """The completion (streamed through `on_delta` when `stream`), and its
        x-claif-cache-status. `outcome` gets the prepared request, whose
        outcome a stream's headers report before the answer is complete."""
        completions = self.completions
        if request.session is not None:
            response, _ = await completions.session_send(request, on_delta if stream else None)
            return response, _cache_status(response, "ok")
        prepared = completions.prepare(request)
        if outcome is not None:
            outcome.append(prepared)
        with anyio.fail_after(prepared.timeout):
            if stream:
                response = await completions.stream(prepared, on_delta)
            else:
                response = await completions.complete(prepared)
        return response, _cache_status(response, prepared.outcome)

    # ------------------------------------------------------------- OpenAI

    async def _chat(self, ex: _Exchange) -> None:
        try:
            request, stream, include_usage = openai_request(self._decode(ex))
        except WireError as exc:
            raise _Reply(400, self._error_doc(ex, 400, str(exc))) from None
        request, ignored = self._steer(ex, request, "openai")
        model = request.model or ""
        extra = [("x-claif-ignored", ",".join(ignored))] if ignored else []
        rid = "chatcmpl-" + ex.rid
        created = int(time.time())
        if not stream:
            response, status = await self._run(request, False, _no_delta)
            await ex.respond(200, openai_response(response, model or response.model, rid, created),
                             [("x-claif-cache-status", status), *extra])
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            doc: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "system_fingerprint": None,
                                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]}
            if include_usage:
                doc["usage"] = None
            return doc

        async def on_delta(text: str) -> None:
            await begin()
            await ex.sse(chunk({"content": text}))

        outcome: list[Prepared] = []

        async def begin() -> None:
            if not ex.started:
                await ex.start_sse([("x-claif-cache-status", _streamed_status(outcome)), *extra])
                await ex.sse(chunk({"role": "assistant", "content": "", "refusal": None}))

        response, _ = await self._run(request, True, on_delta, outcome)
        await begin()
        calls = tool_calls_of(response)
        if calls:
            await ex.sse(chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))
        await ex.sse(chunk({}, FINISH_REASONS.get(response.stop_reason or "end_turn", "stop")))
        if include_usage:
            u = response.usage
            await ex.sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "system_fingerprint": None, "choices": [],
                          "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                                    "total_tokens": u.input_tokens + u.output_tokens}})
        await ex.sse("[DONE]")
        await ex.send(h11.EndOfMessage())

    # ---------------------------------------------------------- Anthropic

    async def _messages(self, ex: _Exchange) -> None:
        try:
            request, stream = anthropic_request(self._decode(ex))
        except WireError as exc:
            raise _Reply(400, self._error_doc(ex, 400, str(exc))) from None
        if request.max_tokens is None:
            raise _Reply(400, self._error_doc(ex, 400, "max_tokens: Field required"))
        request, _ = self._steer(ex, request, "anthropic")
        model = request.model or ""
        rid = "msg_" + ex.rid
        if not stream:
            response, status = await self._run(request, False, _no_delta)
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

        response, _ = await self._run(request, True, on_delta, outcome)
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
        await ex.send(h11.EndOfMessage())


async def _no_delta(text: str) -> None:
    raise AssertionError("not streaming")


def _streamed_status(outcome: list[Prepared]) -> str:
    return _OUTCOME_STATUS.get(outcome[0].outcome, "miss") if outcome else "miss"


def _cache_status(response: CompletionResponse, outcome: str) -> str:
    if outcome in _OUTCOME_STATUS:
        return _OUTCOME_STATUS[outcome]
    if response.cached:
        return "hit-exact" if response.cached == "exact" else "hit-semantic"
    return "miss"

