"""The blocking client: one Unix-socket connection, multiplexed by request id.

Design notes:

* Lazy connect: nothing touches the socket until the first call. After the
  daemon restarts, the next call finds the old connection dead (writing to a
  Unix socket whose peer has gone fails at once with EPIPE, so nothing was
  delivered) and reconnects and resends once.
* Replies are read by whichever caller is waiting; a frame for another request
  id is kept in that request's mailbox. That lets an open stream and ordinary
  calls (or several threads) share the connection. Threads are safe but take
  turns reading; for real concurrency use `AsyncClient` or a client per thread.
* `timeout` bounds each wait for the daemon's next frame. On a timeout the
  request is cancelled on the daemon and its late replies are dropped.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ._demux import terminal_result
from ._requests import CacheArg, MessagesArg, build_request
from ._version import __version__
from .connection import DEFAULT_TIMEOUT, RECV_SIZE, ClientConnection
from .errors import ClaifError, DaemonUnavailable, ProtocolError, Timeout
from .paths import resolve_socket_path
from .protocol import (
    Batch,
    BatchItem,
    CacheClear,
    CacheDelete,
    CacheStats,
    Cancel,
    Chunk,
    Complete,
    CompletionRequest,
    CompletionResponse,
    ConfigGet,
    ConfigReload,
    ConfigSet,
    ConfigShow,
    ConfigSources,
    ConfigValidate,
    Done,
    GetStatus,
    Health,
    Metrics,
    Ping,
    Reply,
    Request,
    Result,
    SessionCreate,
    SessionDelete,
    SessionExport,
    SessionFork,
    SessionGet,
    SessionImport,
    SessionList,
    encode_frame,
)

if TYPE_CHECKING:
    from .openai_compat import SyncChat

__all__ = ["Client", "CompletionStream", "DEFAULT_TIMEOUT"]



class Client:
    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        client_name: str = f"claif-client/{__version__}",
    ) -> None:
        self.socket_path: Path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self.client_name = client_name
        self.daemon_version: str | None = None
        self.capabilities: tuple[str, ...] = ()
        self._chat: Any = None
        self._sock: socket.socket | None = None
        # The protocol's rules without I/O: handshake, ids, replies by id, cancel.
        self._protocol = ClientConnection(client_name)
        self._demux = self._protocol.demux
        self._send_lock = threading.Lock()
        # One thread reads at a time (it holds `_read_lock`) and files each
        # frame in its mailbox; the others wait on `_filed`, notified after
        # every read, so a reply is taken at once even while the reader waits
        # on a slow request. A lone thread only takes `_read_lock`.
        self._read_lock = threading.Lock()
        self._filed = threading.Condition(threading.Lock())
        self._waiting = 0

    # ------------------------------------------------------------------ API

    @property
    def chat(self) -> SyncChat:
        """The OpenAI-style facade: `client.chat.completions.create(...)`."""
        if self._chat is None:
            from .openai_compat import (
                SyncChat,  # imported on first use: keeps `claif` startup short
            )

            self._chat = SyncChat(self)
        return self._chat  # type: ignore[no-any-return]

    def ping(self) -> None:
        self._call(Ping(id=self._new_id()))

    def status(self) -> dict[str, Any]:
        return self._value(GetStatus(id=self._new_id()))  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        """`{status: healthy|warning|unhealthy, checks: [{name, status, detail}]}`."""
        return self._value(Health(id=self._new_id()))  # type: ignore[no-any-return]

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self._value(Metrics(id=self._new_id()))  # type: ignore[no-any-return]

    def session_create(
        self, title: str | None = None, model: str | None = None, system: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new session (saved before this returns); its `id` is what the other calls take."""
        return self._value(SessionCreate(id=self._new_id(), title=title, model=model, system=system, metadata=metadata))  # type: ignore[no-any-return]

    def session_send(
        self,
        session_id: str,
        message: MessagesArg,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: CacheArg = None,
        **more: Any,
    ) -> tuple[CompletionResponse, dict[str, Any]]:
        """Send within a session: the reply, and `{session_id, message_index, dropped, model}`
        (`dropped`: messages of a long conversation left out of the context)."""
        request = build_request(
            message, model=model, system=system, max_tokens=max_tokens, temperature=temperature,
            cache=cache, session=session_id, more=more,
        )
        reply = self._call(Complete(id=self._new_id(), request=request))
        assert isinstance(reply, Done) and reply.response is not None
        return reply.response, reply.value or {}

    def session_get(self, session_id: str) -> dict[str, Any]:
        return self._value(SessionGet(id=self._new_id(), session_id=session_id))  # type: ignore[no-any-return]

    def session_list(
        self, metadata: dict[str, Any] | None = None, offset: int = 0, limit: int = 50
    ) -> dict[str, Any]:
        """`{total, sessions: [{id, title, updated, message_count, ...}]}`, most recent first."""
        return self._value(SessionList(id=self._new_id(), metadata=metadata, offset=offset, limit=limit))  # type: ignore[no-any-return]

    def session_delete(self, session_id: str) -> None:
        self._value(SessionDelete(id=self._new_id(), session_id=session_id))

    def session_export(self, session_id: str, format: str = "json") -> Any:
        """The session as a document ("json") or as markdown text ("md")."""
        return self._value(SessionExport(id=self._new_id(), session_id=session_id, format=format))

    def session_import(self, document: Any) -> dict[str, Any]:
        return self._value(SessionImport(id=self._new_id(), document=document))  # type: ignore[no-any-return]

    def session_fork(self, session_id: str, at: int | None = None, title: str | None = None) -> dict[str, Any]:
        """A new session holding the messages up to and including index `at`."""
        return self._value(SessionFork(id=self._new_id(), session_id=session_id, at=at, title=title))  # type: ignore[no-any-return]

    def config_get(self, key: str) -> dict[str, Any]:
        """`{"key", "value", "source"}`: source is default, global, project, env or runtime."""
        return self._value(ConfigGet(id=self._new_id(), key=key))  # type: ignore[no-any-return]

    def config_set(self, key: str, value: Any, scope: str = "runtime") -> dict[str, Any]:
        """Set a dotted key in the runtime layer, or in the project or global file."""
        return self._value(ConfigSet(id=self._new_id(), key=key, value=value, scope=scope))  # type: ignore[no-any-return]

    def config_show(self) -> dict[str, Any]:
        """The effective configuration (secrets redacted)."""
        return self._value(ConfigShow(id=self._new_id()))  # type: ignore[no-any-return]

    def config_sources(self) -> dict[str, Any]:
        return self._value(ConfigSources(id=self._new_id()))  # type: ignore[no-any-return]

    def config_reload(self) -> dict[str, Any]:
        return self._value(ConfigReload(id=self._new_id()))  # type: ignore[no-any-return]

    def config_validate(self, text: str, name: str = "<text>") -> dict[str, Any]:
        return self._value(ConfigValidate(id=self._new_id(), text=text, name=name))  # type: ignore[no-any-return]

    def _value(self, msg: Request) -> Any:
        reply = self._call(msg)
        if not isinstance(reply, Result):
            raise ProtocolError(f"expected a result, got {type(reply).__name__}")
        return reply.value

    def cache_stats(self) -> dict[str, Any]:
        return self._value(CacheStats(id=self._new_id()))  # type: ignore[no-any-return]

    def cache_clear(self, namespace: str | None = None) -> int:
        """Drop cached answers (all, or one namespace's); how many were removed."""
        return int(self._value(CacheClear(id=self._new_id(), namespace=namespace))["removed"])

    def cache_delete(self, key: str) -> bool:
        """Drop one cached answer by its key (`CompletionResponse.cache_key`)."""
        return bool(self._value(CacheDelete(id=self._new_id(), key=key))["deleted"])

    def complete(
        self,
        messages: MessagesArg,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: CacheArg = None,
        session: str | None = None,
        **more: Any,
    ) -> CompletionResponse:
        request = build_request(
            messages, model=model, system=system, max_tokens=max_tokens,
            temperature=temperature, cache=cache, session=session, more=more,
        )
        return self.complete_request(request)

    def complete_request(self, request: CompletionRequest) -> CompletionResponse:
        reply = self._call(Complete(id=self._new_id(), request=request))
        assert isinstance(reply, Done) and reply.response is not None
        return reply.response

    def batch(
        self,
        requests: Sequence[CompletionRequest | dict[str, Any]],
        concurrency: int | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[BatchItem]:
        """Run `requests` on the daemon, `concurrency` at a time (default:
        `batch.concurrency`). Results come in input order; a failed item has
        `.error` instead of `.response`. `on_progress` gets
        `{index, ok, done, total}` as each item finishes."""
        reqs = [r if isinstance(r, CompletionRequest) else msgspec.convert(r, CompletionRequest) for r in requests]
        rid = self._new_id()
        self._demux.open(rid)
        try:
            self._send(Batch(id=rid, requests=reqs, concurrency=concurrency))
            while True:
                reply = self._next_reply(rid)
                if not isinstance(reply, Chunk):
                    break
                if on_progress is not None:
                    on_progress(reply.data)
        except BaseException:
            self._abandon(rid)
            raise
        self._demux.finish(rid)
        result = terminal_result(reply)
        if not isinstance(result, Result):
            raise ProtocolError(f"unexpected {type(result).__name__} frame ending a batch")
        return msgspec.convert(result.value, list[BatchItem])

    def stream(
        self,
        messages: MessagesArg,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: CacheArg = None,
        session: str | None = None,
        **more: Any,
    ) -> CompletionStream:
        request = build_request(
            messages, model=model, system=system, max_tokens=max_tokens,
            temperature=temperature, cache=cache, session=session, more=more,
        )
        return self.stream_request(request)

    def stream_request(self, request: CompletionRequest) -> CompletionStream:
        rid = self._new_id()
        self._demux.open(rid)
        try:
            self._send(Complete(id=rid, request=request, stream=True))
        except BaseException:
            self._demux.finish(rid)
            raise
        return CompletionStream(self, rid)

    def close(self) -> None:
        self._drop_connection()
        self._demux.mailboxes.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "idle"
        return f"<Client {state} socket={str(self.socket_path)!r} in_flight={len(self._demux.mailboxes)}>"

    # ------------------------------------------------------------ plumbing

    def _new_id(self) -> int:
        return self._protocol.next_id()

    def _call(self, msg: Request) -> Reply:
        self._demux.open(msg.id)
        try:
            self._send(msg)
            reply = self._next_reply(msg.id)
        except BaseException:
            self._abandon(msg.id)
            raise
        self._demux.finish(msg.id)
        return terminal_result(reply)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonUnavailable(
                f"no daemon at {self.socket_path} ({exc.strerror}); start it with `claifd`"
            ) from exc
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        try:
            sock.sendall(self._protocol.connect())
            welcome = None
            while welcome is None:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise DaemonUnavailable("daemon closed the connection during the handshake")
                welcome = self._protocol.receive_welcome(data)
        except TimeoutError as exc:
            sock.close()
            raise Timeout("daemon did not answer the handshake") from exc
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"connection to {self.socket_path} failed: {exc}") from exc
        except ClaifError:
            sock.close()
            raise
        self.daemon_version = welcome.daemon_version
        self.capabilities = tuple(welcome.capabilities)
        _use_kernel_timeouts(sock, self.timeout)
        self._sock = sock
        return sock

    def _send(self, msg: Request) -> None:
        frame = encode_frame(msg)
        with self._send_lock:
            sock = self._sock or self._connect()
            try:
                sock.sendall(frame)
                return
            except BlockingIOError as exc:
                # SO_SNDTIMEO fired: the daemon stopped reading. Part of the
                # frame may be sent, so this connection cannot be reused.
                self._drop_connection()
                raise Timeout(f"daemon did not accept the request within {self.timeout}s") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if self._demux.others_in_flight(msg.id) or isinstance(msg, Cancel):
                    raise DaemonUnavailable("connection to the daemon was lost") from exc
            except OSError as exc:
                self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc
            # The daemon went away between calls (e.g. it was restarted): a
            # failed write to a Unix socket delivered nothing, so resend once.
            try:
                self._connect().sendall(frame)
            except OSError as exc:
                self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._demux.reset()

    def _next_reply(self, rid: int) -> Reply:
        """Block until the next frame for request `rid` arrives."""
        box = self._demux.mailboxes[rid]
        while not box:
            if self._read_lock.acquire(blocking=False):
                try:
                    self._read_frames()
                finally:
                    self._read_lock.release()
                    # Read after the release: a waiter counts itself before it
                    # checks the lock, so one of the two always sees the other.
                    if self._waiting:
                        with self._filed:
                            self._filed.notify_all()
            else:
                with self._filed:
                    self._waiting += 1
                    if self._read_lock.locked() and not box:
                        self._filed.wait()
                    self._waiting -= 1
        return box.popleft()

    def _read_frames(self) -> None:
        sock = self._sock
        if sock is None:
            raise DaemonUnavailable("not connected to the daemon")
        try:
            data = sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError) as exc:
            raise Timeout(f"no reply from the daemon within {self.timeout}s") from exc
        except OSError as exc:
            self._drop_connection()
            raise DaemonUnavailable(f"connection to the daemon failed: {exc}") from exc
        if not data:
            self._drop_connection()
            raise DaemonUnavailable("the daemon closed the connection")
        try:
            failure = self._demux.feed(data)
        except ProtocolError:
            self._drop_connection()
            raise
        if failure is not None:
            # A connection-level error; the daemon closes after it.
            self._drop_connection()
            raise failure

    def _abandon(self, rid: int) -> None:
        """Stop waiting for `rid`: cancel it on the daemon, drop its late replies."""
        cancel = self._protocol.give_up(rid)
        if cancel is not None and self._sock is not None:
            try:
                self._send(cancel)
            except ClaifError:
                pass


def _use_kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Make `sock` blocking with SO_RCVTIMEO/SO_SNDTIMEO doing the timeout.

    A Python-level socket timeout polls before every recv: one more syscall
    and about a third more latency per round trip. The kernel timeout costs
    nothing until it fires, when recv fails with EAGAIN (BlockingIOError).
    """
    sock.settimeout(None)
    if timeout is None:
        return
    seconds = int(timeout)
    micros = int((timeout - seconds) * 1_000_000)
    value = struct.pack("ll", seconds, micros)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class CompletionStream:
    """Iterator of text deltas; `response` holds the final message once it ends.

    Leaving the loop early (break, exception, `close()`) cancels the request
    on the daemon, which cancels the upstream call.
    """

    def __init__(self, client: Client, rid: int) -> None:
        self._client = client
        self._rid = rid
        self._finished = False
        self.response: CompletionResponse | None = None
        # For a send within a session: {session_id, message_index, dropped, model}.
        self.info: Any = None

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> str:
        while not self._finished:
            try:
                reply = self._client._next_reply(self._rid)
            except BaseException:
                self.close()
                raise
            if isinstance(reply, Chunk):
                if reply.text:
                    return reply.text
                continue
            self._finished = True
            self._client._demux.finish(self._rid)
            done = terminal_result(reply)
            if not isinstance(done, Done):
                raise ProtocolError(f"unexpected {type(done).__name__} frame ending a stream")
            self.response = done.response
            self.info = done.value
        raise StopIteration

    def until_done(self) -> CompletionResponse:
        """Consume the rest of the stream and return the final response."""
        for _ in self:
            pass
        assert self.response is not None
        return self.response

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._client._abandon(self._rid)

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An iterator dropped half-way must not leave the daemon streaming.
        if not self._finished and self._client._sock is not None:
            try:
                self.close()
            except Exception:
                pass
