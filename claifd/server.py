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
import collections
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec
import structlog

from claif_client.connection import ServerConnection
from claif_client.framing import FrameTooLarge
from claif_client.protocol import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    Cancel,
    Error,
    ErrorCode,
    encode_frame,
)

from .dispatch import Start, TaskHandler
from .errors import error_frame

if TYPE_CHECKING:
    from .callers import Caller
    from .listener import Server

__all__ = ["Connection", "CAPABILITIES"]

log = structlog.get_logger("claifd.server")

CAPABILITIES = ["multiplex", "stream", "cancel", "batch", "cache", "config", "sessions", "health", "metrics"]


class Connection(asyncio.Protocol):
    """One client connection: frames in, replies out."""

    def __init__(self, server: Server, cid: int) -> None:
        self.server = server
        self.state = server.state
        self.routes = server.dispatch.routes
        self.perf = server.perf
        self.cid = cid
        self.transport: asyncio.Transport | None = None
        # The protocol's rules (handshake, decoding, ids, cancel) without I/O;
        # each request in flight holds its task's cancel scope there.
        self.protocol: ServerConnection[anyio.CancelScope] = ServerConnection(server.decoder, server.welcome)
        # The hot path calls these bound methods directly (one Python call
        # less per frame each); what they do stays the protocol's: framing,
        # and decoding with its typed decoder (a payload that fails goes back
        # to `protocol.receive_request` for its answer).
        self._feed = self.protocol.frames.feed
        self._decode = server.decoder.decode
        self.closed = False
        # Reading stops while the client does not read its replies (the
        # transport's buffer is over its high-water mark) or while it has
        # max_in_flight_per_connection requests running; payloads already
        # read wait in `_backlog` meanwhile. So a client that pipelines
        # requests and never reads costs a bounded buffer, not memory
        # without end.
        self._reading_paused = False
        self._write_paused = False
        self._tasks_full = False
        # Its project file is being read (on_hello): frames wait meanwhile.
        self._loading = False
        # The caller's project layer (callers.py), or None: the daemon's own configuration.
        self.caller: Caller | None = None
        self._backlog: collections.deque[bytes | memoryview] = collections.deque()
        self._can_write: asyncio.Event | None = None
        # For the server's sweep: when the connection came, and the partial
        # frame last seen pending (frames completed so far, since when).
        self.opened_at = time.monotonic()
        self.stall: tuple[int, float] | None = None

    @property
    def cwd(self) -> str:
        return self.protocol.cwd

    def __repr__(self) -> str:
        return f"<Connection #{self.cid} in_flight={len(self.protocol.in_flight)} closed={self.closed}>"

    # ------------------------------------------------ asyncio protocol hooks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.state.connections += 1
        refusal = self.server.refuse_peer(self, transport.get_extra_info("socket"))
        if refusal is not None:
            self.fail(ErrorCode.FORBIDDEN, refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.state.connections -= 1
        self._backlog.clear()
        # The client is gone: its requests (and their upstream calls) stop.
        for scope in self.protocol.lost():
            scope.cancel()
        if self._can_write is not None:
            self._can_write.set()
        pending = self.protocol.frames.pending_bytes
        if pending:
            log.info("connection closed mid-frame", conn=self.cid, pending_bytes=pending)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._can_write = asyncio.Event()
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._can_write is not None:
            self._can_write.set()
        self._unblocked()

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self._feed(data)
        except FrameTooLarge as exc:
            log.warning("frame too large, closing connection", conn=self.cid, size=exc.size, limit=exc.limit)
            self.fail(ErrorCode.TOO_LARGE, str(exc))
            return
        if self._backlog or self._write_paused or self._tasks_full or self._loading:
            self._backlog.extend(payloads)
            self._set_reading()
            return
        for i, payload in enumerate(payloads):
            if self.closed:
                return
            self.on_payload(payload)
            if self._write_paused or self._tasks_full or self._loading:
                # Hold the rest until the client reads (or requests finish).
                self._backlog.extend(payloads[i + 1 :])
                self._set_reading()
                return

    def on_payload(self, payload: bytes | memoryview) -> None:
        """One frame's payload, whatever is wrong with it: answered, never raised
        (an exception here would end the connection and every stream on it)."""
        try:
            if self.protocol.open:
                self.on_request(payload)
            else:
                self.on_hello(payload)
        except Exception:
            log.exception("unexpected error handling a frame", conn=self.cid)
            self.write(Error(id=0, code=ErrorCode.INTERNAL, message="the daemon failed to handle a frame"))

    def _unblocked(self) -> None:
        """A reason to hold back went away: work through the backlog, then read again."""
        backlog = self._backlog
        while backlog and not (self._write_paused or self._tasks_full or self._loading or self.closed):
            self.on_payload(backlog.popleft())
        self._set_reading()

    def _set_reading(self) -> None:
        pause = self._write_paused or self._tasks_full or self._loading or bool(self._backlog)
        if pause != self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def stalled(self, now: float, timeout: float) -> str | None:
        """Why the server should close this connection now, if it should."""
        if self.closed:
            return None
        if not self.protocol.open:
            return "no handshake" if now - self.opened_at > timeout else None
        frames = self.protocol.frames
        if not frames.pending_bytes:
            self.stall = None
            return None
        if self.stall is None or self.stall[0] != frames.completed:
            # A partial frame not seen before: its clock starts now.
            self.stall = (frames.completed, now)
            return None
        return "a partial frame and nothing more" if now - self.stall[1] > timeout else None

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

    def write_raw(self, frames: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(frames)

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
        frame, opened = self.protocol.receive_hello(payload)
        self.write_raw(frame)
        if not opened:
            self.close()
            return
        log.debug("client connected", conn=self.cid, client=self.protocol.client, project=self.protocol.project)
        project = self.protocol.project
        if project:
            self.caller = self.server.callers.known(project)
            if self.caller is None:
                # Its project file is read first (off the loop); its requests wait in the backlog.
                self._loading = True
                self.server.task_group.start_soon(self._load_caller, project)

    async def _load_caller(self, project: str) -> None:
        try:
            self.caller = await self.server.callers.load(project)
        except Exception:
            log.exception("cannot read a caller's project config", conn=self.cid, file=project)
        finally:
            self._loading = False
            self._unblocked()

    def on_request(self, payload: bytes | memoryview) -> None:
        try:
            msg = self._decode(payload)
        except (msgspec.DecodeError, ValueError, RecursionError):
            # Invalid msgpack, a schema mismatch, invalid UTF-8 in a string,
            # nesting too deep: the frame is answered, the connection lives on.
            self.reject(payload)
            return
        kind = type(msg)
        if kind is Cancel:  # no reply of its own: the request it names ends `cancelled`
            scope = self.protocol.cancel(msg.id)
            if scope is not None:
                scope.cancel()
            return
        route = self.routes[kind]  # the decoder knows only routed types
        self.state.requests_total += 1
        if route.inline is not None:
            started = time.perf_counter()
            try:
                reply = route.inline(msg, self)
            except Exception as exc:
                reply = self.failed(msg, exc)
            if isinstance(reply, Start):
                self.start(*reply)  # (the task records it)
                return
            if reply is not None:
                self.write(reply)
            if not route.records:
                outcome = reply.code if type(reply) is Error else "ok"
                self.perf.request(route.method, "", "", outcome, time.perf_counter() - started)
        else:
            assert route.task is not None
            self.start(msg, route.task)

    def reject(self, payload: bytes | memoryview) -> None:
        """A payload that is no valid request: answered, and the connection lives on."""
        error = self.protocol.receive_request(payload)
        assert isinstance(error, Error)
        log.info("rejected request", conn=self.cid, id=error.id, code=error.code, reason=error.message)
        self.write(error)

    def failed(self, msg: Any, exc: Exception) -> Error:
        frame = error_frame(msg.id, exc)
        if frame.code == ErrorCode.INTERNAL:
            log.exception("request failed", method=type(msg).__name__.lower())
        return frame

    # --------------------------------------------------- requests as tasks

    def start(self, msg: Any, handler: TaskHandler, arg: Any = None, timeout: float | None = None,
              recorded: bool = False) -> None:
        if self.state.draining:
            self.write(Error(id=msg.id, code=ErrorCode.SHUTTING_DOWN, message="the daemon is shutting down"))
            return
        # The scope exists before the task runs, so a Cancel that arrives
        # first still finds it. It also carries the request's deadline: one
        # scope per request instead of two on the hot path.
        scope = anyio.CancelScope()
        refused = self.protocol.begin(msg.id, scope)
        if refused is not None:
            self.write(refused)
            return
        if timeout is not None:
            scope.deadline = anyio.current_time() + timeout
        self.state.in_flight.enter()
        if len(self.protocol.in_flight) >= self.state.max_in_flight_per_connection:
            self._tasks_full = True
            self._set_reading()
        self.state.tasks.spawn(self.run_request(msg, handler, arg, scope, recorded))

    def _finish(self, rid: int) -> None:
        self.protocol.end(rid)
        self.state.in_flight.exit()
        if self._tasks_full:
            # Resume at half the limit, not at every finished request.
            limit = self.state.max_in_flight_per_connection
            if len(self.protocol.in_flight) < max(1, limit // 2):
                self._tasks_full = False
                self._unblocked()

    async def run_request(self, msg: Any, handler: TaskHandler, arg: Any, scope: anyio.CancelScope,
                          recorded: bool = False) -> None:
        """Run one request as a task; every path ends with one terminal frame."""
        rid = msg.id
        structlog.contextvars.bind_contextvars(request_id=f"{self.cid}.{rid}")
        started = time.perf_counter()  # the loop clock ticks in whole ms under uvloop
        outcome = "ok"
        try:
            with scope:
                reply = await handler(msg, self, arg)
                if reply is not None:
                    await self.send(reply)
            if scope.cancelled_caught:
                if anyio.current_time() >= scope.deadline:
                    outcome = "timeout"
                    self.write(Error(id=rid, code=ErrorCode.TIMEOUT, message="request timed out in the daemon"))
                else:
                    outcome = "cancelled"
                    self.write(Error(id=rid, code=ErrorCode.CANCELLED, message="request cancelled"))
        except Exception as exc:
            frame = self.failed(msg, exc)
            outcome = frame.code
            self.write(frame)
        finally:
            self._finish(rid)
            duration = time.perf_counter() - started
            if not recorded:  # (a completion is recorded by its pipeline, with its model)
                self.perf.request(msg.__struct_config__.tag, "", "", outcome, duration)
            log.debug("request done", method=type(msg).__name__.lower(), outcome=outcome,
                      duration_ms=round(duration * 1000, 3))


