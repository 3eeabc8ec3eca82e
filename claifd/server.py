"""The Unix-socket server: one `Connection` (an asyncio protocol) per client.

Why an asyncio protocol and not anyio streams: the hot path (ping, status and,
later, cache hits) is answered synchronously inside `data_received` -- decode,
look up, `transport.write` -- with no task switch and no await. Anything that
waits (a completion) runs as a task in the server's request task group, which
lives inside the daemon's root task group, so structured concurrency holds:
shutting the server down cancels every request task.

A connection fails alone. A frame whose length is over the limit, or a
broken handshake, ends that connection (the byte stream can no longer be
trusted); a well-framed but invalid message is answered with an `Error` and
the connection stays up. An exception in a handler becomes an `internal`
error for that request only.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from pathlib import Path
from typing import Any, Union

import anyio
import anyio.abc
import msgspec
import structlog

from claif_client.framing import FrameDecoder, FrameTooLarge
from claif_client.protocol import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Batch,
    BatchProgress,
    CacheClear,
    CacheDelete,
    CacheStats,
    Cancel,
    Chunk,
    Complete,
    CompletionRequest,
    ConfigGet,
    ConfigReload,
    ConfigSet,
    ConfigShow,
    ConfigSources,
    ConfigValidate,
    Done,
    Error,
    ErrorCode,
    GetStatus,
    Health,
    Hello,
    Metrics,
    Ping,
    Pong,
    Request,
    Result,
    SessionCreate,
    SessionDelete,
    SessionExport,
    SessionFork,
    SessionGet,
    SessionImport,
    SessionList,
    Welcome,
    encode_frame,
    hello_decoder,
)

from . import __version__
from .app import App, Prepared, replay_chunks
from .cache.entry import MemEntry
from .config import ConfigError
from .errors import BadRequest, ClaifdError, error_frame
from .monitoring import health, metrics_text
from .sessions.service import export_markdown

__all__ = ["Server", "Connection", "CAPABILITIES"]

log = structlog.get_logger("claifd.server")

CAPABILITIES = ["multiplex", "stream", "cancel", "batch", "cache", "config", "sessions", "health", "metrics"]
SessionOp = SessionCreate | SessionGet | SessionList | SessionDelete | SessionExport | SessionImport | SessionFork
_SESSION_OPS = (SessionCreate, SessionGet, SessionList, SessionDelete, SessionExport, SessionImport, SessionFork)
# Requests that run as tasks (they wait on upstream calls, threads or files).
Task = Complete | Batch | CacheClear | CacheDelete | ConfigSet | ConfigReload | SessionOp
# Pending connections the kernel queues for us; local clients connect in bursts
# (a batch script starting many workers), so be generous.
LISTEN_BACKLOG = 512

_hello_decoder = hello_decoder()


class _CompleteRaw(msgspec.Struct, tag="complete", tag_field="type"):
    """`Complete` with its request left undecoded: on a repeated request the
    raw bytes alone find the cache key (see `App.hot_key`), so a hit skips
    decoding, validating, routing and hashing the request."""

    id: int
    request: msgspec.Raw
    stream: bool = False


class _DoneRaw(msgspec.Struct, tag="done", tag_field="type"):
    """`Done` with a response that is already msgpack (a cache hit): the
    same bytes on the wire as `Done`, without encoding the response again."""

    id: int
    response: msgspec.Raw



class Connection(asyncio.Protocol):
    """One client connection: frames in, replies out."""

    def __init__(self, server: Server, cid: int) -> None:
        self.server = server
        self.app = server.app
        self.cid = cid
        self.transport: asyncio.Transport | None = None
        self.frames = FrameDecoder()
        self.decoder = _server_decoder
        self.handshaken = False
        self.closed = False
        # Request id -> the cancel scope of its task.
        self.in_flight: dict[int, anyio.CancelScope] = {}
        self._reading_paused = False
        self._write_paused = False
        self._can_write: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Connection #{self.cid} in_flight={len(self.in_flight)} closed={self.closed}>"

    # ------------------------------------------------ asyncio protocol hooks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.app.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.app.connections -= 1
        # The client is gone: its requests (and their upstream calls) stop.
        for scope in self.in_flight.values():
            scope.cancel()
        if self._can_write is not None:
            self._can_write.set()
        if self.frames.pending_bytes:
            log.info("connection closed mid-frame", conn=self.cid, pending_bytes=self.frames.pending_bytes)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._can_write = asyncio.Event()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._can_write is not None:
            self._can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.frames.feed(data)
        except FrameTooLarge as exc:
            log.warning("frame too large, closing connection", conn=self.cid, size=exc.size, limit=exc.limit)
            self.fail(ErrorCode.TOO_LARGE, str(exc))
            return
        for payload in payloads:
            if self.closed:
                return
            if self.handshaken:
                self.on_request(payload)
            else:
                self.on_hello(payload)

    # ------------------------------------------------------------ writing

    def write(self, msg: msgspec.Struct) -> None:
        """Queue a reply now (no backpressure wait: for small, terminal replies)."""
        if not self.closed:
            assert self.transport is not None
            frame = encode_frame(msg)
            if len(frame) - HEADER_SIZE > MAX_FRAME_SIZE:
                # The client would refuse it and drop the connection: say why instead.
                rid = getattr(msg, "id", 0)
                log.warning("reply over the frame limit", id=rid, size=len(frame) - HEADER_SIZE)
                frame = encode_frame(Error(
                    id=rid, code=ErrorCode.TOO_LARGE,
                    message=f"the reply ({len(frame) - HEADER_SIZE} bytes) exceeds the {MAX_FRAME_SIZE}-byte frame limit; "
                            "ask for less at once (e.g. split the batch)",
                ))
            self.transport.write(frame)

    async def send(self, msg: msgspec.Struct) -> None:
        """Write a reply, waiting while the client is not reading (backpressure)."""
        while self._write_paused and not self.closed:
            assert self._can_write is not None
            await self._can_write.wait()
        self.write(msg)

    def fail(self, code: str, message: str) -> None:
        """Connection-level error: tell the client (id 0), then close."""
        self.write(Error(id=0, code=code, message=message))
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # ------------------------------------------------------------ reading

    def on_hello(self, payload: bytes | memoryview) -> None:
        try:
            hello = _hello_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            self.fail(ErrorCode.HANDSHAKE_REQUIRED, f"expected a Hello frame first: {exc}")
            return
        if not isinstance(hello, Hello):
            self.fail(ErrorCode.HANDSHAKE_REQUIRED, "expected a Hello frame first")
            return
        if hello.protocol != PROTOCOL_VERSION:
            self.fail(
                ErrorCode.PROTOCOL_MISMATCH,
                f"client speaks protocol {hello.protocol}, this daemon speaks {PROTOCOL_VERSION}; "
                "upgrade the older side",
            )
            return
        self.handshaken = True
        self.write(Welcome(protocol=PROTOCOL_VERSION, daemon_version=__version__, capabilities=CAPABILITIES))
        log.debug("client connected", conn=self.cid, client=hello.client)

    def on_request(self, payload: bytes | memoryview) -> None:
        try:
            msg = self.decoder.decode(payload)
        except msgspec.DecodeError as exc:
            self.reject(payload, exc)
            return
        app = self.app
        kind = type(msg)
        if kind is Cancel:
            scope = self.in_flight.get(msg.id)
            if scope is not None:
                scope.cancel()
            return
        app.requests_total += 1
        if kind is _CompleteRaw:
            self.on_complete_raw(msg)
        elif kind is Ping:
            self.write(Pong(id=msg.id))
        elif kind is GetStatus:
            self.write(Result(id=msg.id, value=app.status()))
        elif kind is CacheStats:
            self.write(Result(id=msg.id, value=app.cache.stats()))
        elif kind is Health:
            self.write(Result(id=msg.id, value=health(app.status(), app.health_window)))
        elif kind is Metrics:
            self.write(Result(id=msg.id, value=metrics_text(app)))
        elif kind is SessionGet and (session := app.sessions.lru.get(msg.session_id)) is not None:
            session.accessed = time.time()
            self.write(Result(id=msg.id, value=session))
        elif isinstance(msg, (ConfigGet, ConfigShow, ConfigSources, ConfigValidate)):
            self.answer_config(msg)
        elif isinstance(msg, (Batch, CacheClear, CacheDelete, ConfigSet, ConfigReload)) or isinstance(msg, _SESSION_OPS):
            self.start(msg)

    def answer_config(self, msg: ConfigGet | ConfigShow | ConfigSources | ConfigValidate) -> None:
        """The config requests that need no I/O, answered at once."""
        settings = self.app.settings
        if isinstance(msg, ConfigGet):
            try:
                value, source = settings.get(msg.key)
            except KeyError:
                self.write(Error(id=msg.id, code=ErrorCode.NOT_FOUND, message=f"no config key {msg.key!r}"))
                return
            self.write(Result(id=msg.id, value={"key": msg.key, "value": value, "source": source}))
        elif isinstance(msg, ConfigShow):
            self.write(Result(id=msg.id, value=settings.show()))
        elif isinstance(msg, ConfigSources):
            self.write(Result(id=msg.id, value={
                "generation": settings.generation, "last_error": settings.last_error, "sources": settings.sources_info(),
            }))
        else:
            self.write(Result(id=msg.id, value=settings.validate_text(msg.text, msg.name)))

    def on_complete_raw(self, msg: _CompleteRaw) -> None:
        """The hot path: a memory-tier cache hit is answered right here."""
        app = self.app
        key = app.hot_key(msg.request)
        if key is not None and (entry := app.cache.lookup_memory(key)) is not None:
            self.reply_cached(msg.id, msg.stream, entry)
            return
        try:
            request = _request_body_decoder.decode(msg.request)
        except msgspec.DecodeError as exc:
            self.write(Error(id=msg.id, code=ErrorCode.BAD_REQUEST, message=f"invalid request: {exc}"))
            return
        self.on_complete(Complete(id=msg.id, request=request, stream=msg.stream), msg.request)

    def on_complete(self, msg: Complete, raw: msgspec.Raw) -> None:
        if msg.request.session is not None:
            self.start(msg)  # a session send always waits on the store
            return
        try:
            prepared = self.app.prepare(msg.request)
        except ClaifdError as exc:
            self.write(error_frame(msg.id, exc))
            return
        self.app.remember_key(raw, prepared)
        entry = self.app.cached_reply(prepared)
        if entry is None:
            self.start(msg, prepared)
        else:
            self.reply_cached(msg.id, msg.stream, entry)

    def reply_cached(self, rid: int, stream: bool, entry: MemEntry) -> None:
        if self.transport is not None and not self.closed:
            if stream:
                self.transport.write(self._replay_frames(rid, entry))
            else:
                self.transport.write(encode_frame(_DoneRaw(id=rid, response=entry.raw)))

    def _replay_frames(self, rid: int, entry: MemEntry) -> bytes:
        frames = [encode_frame(Chunk(id=rid, text=piece)) for piece in replay_chunks(entry)]
        frames.append(encode_frame(_DoneRaw(id=rid, response=entry.raw)))
        return b"".join(frames)

    def reject(self, payload: bytes | memoryview, exc: msgspec.DecodeError) -> None:
        """Answer a frame that is not a valid request, with its id if it has one."""
        try:
            raw: Any = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError:
            raw = None
        rid = raw.get("id") if isinstance(raw, dict) else None
        rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
        kind = raw.get("type") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind not in REQUEST_TYPES:
            code, message = ErrorCode.UNKNOWN_METHOD, f"unknown method {kind!r}"
        elif raw is None:
            code, message = ErrorCode.BAD_REQUEST, f"payload is not valid msgpack: {exc}"
        else:
            code, message = ErrorCode.BAD_REQUEST, f"invalid request: {exc}"
        log.info("rejected request", conn=self.cid, id=rid, code=code, reason=message)
        self.write(Error(id=rid, code=code, message=message))

    # --------------------------------------------------- requests as tasks

    def start(self, msg: Task, prepared: Prepared | None = None) -> None:
        if msg.id in self.in_flight:
            self.write(Error(id=msg.id, code=ErrorCode.BAD_REQUEST, message=f"request id {msg.id} is already in flight"))
            return
        if self.app.draining:
            self.write(Error(id=msg.id, code=ErrorCode.SHUTTING_DOWN, message="the daemon is shutting down"))
            return
        # The scope exists before the task runs, so a Cancel that arrives
        # first still finds it. It also carries the request's deadline: one
        # scope per request instead of two on the hot path.
        scope = anyio.CancelScope()
        if isinstance(msg, Complete):
            scope.deadline = anyio.current_time() + self.app.request_timeout(msg.request)
        self.in_flight[msg.id] = scope
        self.app.in_flight.enter()
        if len(self.in_flight) >= self.app.config.server.max_in_flight_per_connection:
            self._pause_reading()
        self.server.task_group.start_soon(self.run_request, msg, scope, prepared)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _finish(self, rid: int) -> None:
        self.in_flight.pop(rid, None)
        self.app.in_flight.exit()
        limit = self.app.config.server.max_in_flight_per_connection
        if self._reading_paused and len(self.in_flight) < limit // 2 and not self.closed:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    async def run_request(self, msg: Task, scope: anyio.CancelScope, prepared: Prepared | None) -> None:
        """Run one request as a task; every path ends with one terminal frame."""
        rid = msg.id
        structlog.contextvars.bind_contextvars(request_id=f"{self.cid}.{rid}")
        started = time.perf_counter()  # the loop clock ticks in whole ms under uvloop
        outcome = "ok"
        try:
            with scope:
                if isinstance(msg, Complete):
                    await self._complete(msg, prepared)
                elif isinstance(msg, Batch):
                    await self._batch(msg)
                elif isinstance(msg, CacheClear):
                    self.write(Result(id=rid, value={"removed": await self.app.cache.clear(msg.namespace)}))
                elif isinstance(msg, CacheDelete):
                    self.write(Result(id=rid, value={"deleted": await self.app.cache.delete(msg.key)}))
                elif isinstance(msg, ConfigSet):
                    self.write(Result(id=rid, value=await self._config_set(msg)))
                elif isinstance(msg, _SESSION_OPS):
                    self.write(Result(id=rid, value=await self._session_op(msg)))
                else:
                    changes = await self.app.config_reload("config reload request")
                    settings = self.app.settings
                    self.write(Result(id=rid, value={
                        "generation": settings.generation, "changed": [c.key for c in changes],
                        "error": settings.last_error,
                    }))
            if scope.cancelled_caught:
                if anyio.current_time() >= scope.deadline:
                    outcome = "timeout"
                    self.write(Error(id=rid, code=ErrorCode.TIMEOUT, message="request timed out in the daemon"))
                else:
                    outcome = "cancelled"
                    self.write(Error(id=rid, code=ErrorCode.CANCELLED, message="request cancelled"))
        except Exception as exc:
            frame = error_frame(rid, exc)
            outcome = frame.code
            if outcome == ErrorCode.INTERNAL:
                log.exception("request failed", method=type(msg).__name__.lower())
            self.write(frame)
        finally:
            self._finish(rid)
            log.debug(
                "request done",
                method=type(msg).__name__.lower(),
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _complete(self, msg: Complete, prepared: Prepared | None) -> None:
        rid = msg.id
        if msg.request.session is not None:
            await self._session_send(msg)
            return
        request = prepared if prepared is not None else msg.request
        if not msg.stream:
            self.write(Done(id=rid, response=await self.app.complete(request)))
            return

        async def on_delta(text: str) -> None:
            await self.send(Chunk(id=rid, text=text))

        response = await self.app.stream(request, on_delta)
        await self.send(Done(id=rid, response=response))

    async def _session_send(self, msg: Complete) -> None:
        rid = msg.id
        on_delta = None
        if msg.stream:

            async def on_delta(text: str) -> None:
                await self.send(Chunk(id=rid, text=text))

        response, info = await self.app.session_send(msg.request, on_delta)
        await self.send(Done(id=rid, response=response, value=info))

    async def _session_op(self, msg: SessionOp) -> Any:
        sessions = self.app.sessions
        if isinstance(msg, SessionCreate):
            return await sessions.create(msg.title, msg.model, msg.system, msg.metadata)
        if isinstance(msg, SessionGet):
            return await sessions.get(msg.session_id)
        if isinstance(msg, SessionList):
            total, rows = await sessions.list(msg.metadata, msg.offset, msg.limit)
            return {"total": total, "sessions": rows}
        if isinstance(msg, SessionDelete):
            await sessions.delete(msg.session_id)
            return {"deleted": msg.session_id}
        if isinstance(msg, SessionExport):
            session = await sessions.get(msg.session_id)
            if msg.format == "md":
                return export_markdown(session)
            if msg.format != "json":
                raise BadRequest(f"unknown export format {msg.format!r} (md or json)")
            return session
        if isinstance(msg, SessionImport):
            return await sessions.import_document(msg.document)
        return await sessions.fork(msg.session_id, msg.at, msg.title)

    async def _config_set(self, msg: ConfigSet) -> dict[str, Any]:
        if msg.scope not in ("runtime", "project", "global"):
            raise BadRequest(f"unknown scope {msg.scope!r} (runtime, project or global)")
        try:
            changes = await self.app.config_set(msg.key, msg.value, msg.scope)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise BadRequest(f"config not changed: {exc}") from exc
        except OSError as exc:
            raise BadRequest(f"config not changed: cannot write the {msg.scope} file: {exc.strerror or exc}") from exc
        value, source = self.app.settings.get(msg.key)
        return {"key": msg.key, "value": value, "source": source, "generation": self.app.settings.generation,
                "changed": [c.key for c in changes]}

    async def _batch(self, msg: Batch) -> None:
        rid = msg.id

        async def on_progress(progress: BatchProgress) -> None:
            await self.send(Chunk(id=rid, data=progress))

        items = await self.app.batch(msg.requests, msg.concurrency, on_progress)
        await self.send(Result(id=rid, value=items))


# The server reads `complete` as `_CompleteRaw`; everything else as the protocol says.
_server_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
    Union[tuple(_CompleteRaw if t is Complete else t for t in Request.__args__)]  # type: ignore[attr-defined]
)
_request_body_decoder = msgspec.msgpack.Decoder(CompletionRequest)


class Server:
    """Owns the listening socket, the live connections and the request tasks."""

    def __init__(self, app: App, task_group: anyio.abc.TaskGroup) -> None:
        self.app = app
        self.task_group = task_group
        self.connections: set[Connection] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self.socket_path: Path | None = None

    def __repr__(self) -> str:
        return f"<Server socket={self.socket_path} connections={len(self.connections)}>"

    async def start(self, sock: socket.socket) -> None:
        """Serve connections on an already bound and listening Unix socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: Connection(self, next(self._ids)), sock=sock, backlog=LISTEN_BACKLOG
        )

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        for conn in list(self.connections):
            conn.close()
