"""The anyio client: the same API as `Client`, as coroutines and async iterators.

No background task: whichever coroutine is waiting reads the next frame and
files it in the mailbox of the request it belongs to (the sync client does the
same). So the client needs no task group, connects lazily, and a cancelled
caller loses no bytes: `FrameDecoder` keeps partial frames across reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
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
    from .openai_compat import AsyncChat

__all__ = ["AsyncClient", "AsyncCompletionStream"]



class AsyncClient:
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
        self._stream: anyio.abc.ByteStream | None = None
        # The protocol's rules without I/O: handshake, ids, replies by id, cancel.
        self._protocol = ClientConnection(client_name)
        self._demux = self._protocol.demux
        self._send_lock = anyio.Lock(fast_acquire=True)
        # One caller reads at a time and files each frame in its mailbox;
        # the others wait for `_filed`, set after every read, so a reply is
        # taken at once even while the reader waits on a slow request. (Made
        # only when someone waits: a lone caller creates no event per read.)
        self._reading = False
        self._filed: anyio.Event | None = None

    # ------------------------------------------------------------------ API

    @property
    def chat(self) -> AsyncChat:
        """The OpenAI-style facade: `client.chat.completions.create(...)`."""
        if self._chat is None:
            from .openai_compat import (
                AsyncChat,  # imported on first use: keeps `claif` startup short
            )

            self._chat = AsyncChat(self)
        return self._chat  # type: ignore[no-any-return]

    async def ping(self) -> None:
        await self._call(Ping(id=self._protocol.next_id()))

    async def status(self) -> dict[str, Any]:
        return await self._value(GetStatus(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def health(self) -> dict[str, Any]:
        """`{status: healthy|warning|unhealthy, checks: [{name, status, detail}]}`."""
        return await self._value(Health(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def metrics(self) -> str:
        """The Prometheus text exposition."""
        return await self._value(Metrics(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def session_create(
        self, title: str | None = None, model: str | None = None, system: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new session (saved before this returns); its `id` is what the other calls take."""
        return await self._value(SessionCreate(id=self._protocol.next_id(), title=title, model=model, system=system, metadata=metadata))  # type: ignore[no-any-return]

    async def session_send(
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
        reply = await self._call(Complete(id=self._protocol.next_id(), request=request))
        assert isinstance(reply, Done) and reply.response is not None
        return reply.response, reply.value or {}

    async def session_get(self, session_id: str) -> dict[str, Any]:
        return await self._value(SessionGet(id=self._protocol.next_id(), session_id=session_id))  # type: ignore[no-any-return]

    async def session_list(
        self, metadata: dict[str, Any] | None = None, offset: int = 0, limit: int = 50
    ) -> dict[str, Any]:
        """`{total, sessions: [{id, title, updated, message_count, ...}]}`, most recent first."""
        return await self._value(SessionList(id=self._protocol.next_id(), metadata=metadata, offset=offset, limit=limit))  # type: ignore[no-any-return]

    async def session_delete(self, session_id: str) -> None:
        await self._value(SessionDelete(id=self._protocol.next_id(), session_id=session_id))

    async def session_export(self, session_id: str, format: str = "json") -> Any:
        """The session as a document ("json") or as markdown text ("md")."""
        return await self._value(SessionExport(id=self._protocol.next_id(), session_id=session_id, format=format))

    async def session_import(self, document: Any) -> dict[str, Any]:
        return await self._value(SessionImport(id=self._protocol.next_id(), document=document))  # type: ignore[no-any-return]

    async def session_fork(self, session_id: str, at: int | None = None, title: str | None = None) -> dict[str, Any]:
        """A new session holding the messages up to and including index `at`."""
        return await self._value(SessionFork(id=self._protocol.next_id(), session_id=session_id, at=at, title=title))  # type: ignore[no-any-return]

    async def config_get(self, key: str) -> dict[str, Any]:
        """`{"key", "value", "source"}`: source is default, global, project, env or runtime."""
        return await self._value(ConfigGet(id=self._protocol.next_id(), key=key))  # type: ignore[no-any-return]

    async def config_set(self, key: str, value: Any, scope: str = "runtime") -> dict[str, Any]:
        """Set a dotted key in the runtime layer, or in the project or global file."""
        return await self._value(ConfigSet(id=self._protocol.next_id(), key=key, value=value, scope=scope))  # type: ignore[no-any-return]

    async def config_show(self) -> dict[str, Any]:
        """The effective configuration (secrets redacted)."""
        return await self._value(ConfigShow(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def config_sources(self) -> dict[str, Any]:
        return await self._value(ConfigSources(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def config_reload(self) -> dict[str, Any]:
        return await self._value(ConfigReload(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def config_validate(self, text: str, name: str = "<text>") -> dict[str, Any]:
        return await self._value(ConfigValidate(id=self._protocol.next_id(), text=text, name=name))  # type: ignore[no-any-return]

    async def _value(self, msg: Request) -> Any:
        reply = await self._call(msg)
        if not isinstance(reply, Result):
            raise ProtocolError(f"expected a result, got {type(reply).__name__}")
        return reply.value

    async def cache_stats(self) -> dict[str, Any]:
        return await self._value(CacheStats(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def cache_clear(self, namespace: str | None = None) -> int:
        """Drop cached answers (all, or one namespace's); how many were removed."""
        return int((await self._value(CacheClear(id=self._protocol.next_id(), namespace=namespace)))["removed"])

    async def cache_delete(self, key: str) -> bool:
        """Drop one cached answer by its key (`CompletionResponse.cache_key`)."""
        return bool((await self._value(CacheDelete(id=self._protocol.next_id(), key=key)))["deleted"])

    async def complete(
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
        return await self.complete_request(request)

    async def complete_request(self, request: CompletionRequest) -> CompletionResponse:
        reply = await self._call(Complete(id=self._protocol.next_id(), request=request))
        assert isinstance(reply, Done) and reply.response is not None
        return reply.response

    async def batch(
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
        rid = self._protocol.next_id()
        self._demux.open(rid)
        try:
            await self._send(Batch(id=rid, requests=reqs, concurrency=concurrency))
            while True:
                reply = await self._next_reply(rid)
                if not isinstance(reply, Chunk):
                    break
                if on_progress is not None:
                    on_progress(reply.data)
        except BaseException:
            await self._abandon(rid)
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
    ) -> AsyncCompletionStream:
        request = build_request(
            messages, model=model, system=system, max_tokens=max_tokens,
            temperature=temperature, cache=cache, session=session, more=more,
        )
        return AsyncCompletionStream(self, request)

    def stream_request(self, request: CompletionRequest) -> AsyncCompletionStream:
        return AsyncCompletionStream(self, request)

    async def aclose(self) -> None:
        await self._drop_connection()
        self._demux.mailboxes.clear()

    close = aclose

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "connected" if self._stream is not None else "idle"
        return f"<AsyncClient {state} socket={str(self.socket_path)!r} in_flight={len(self._demux.mailboxes)}>"

    # ------------------------------------------------------------ plumbing

    async def _call(self, msg: Request) -> Reply:
        self._demux.open(msg.id)
        try:
            await self._send(msg)
            reply = await self._next_reply(msg.id)
        except BaseException:
            await self._abandon(msg.id)
            raise
        self._demux.finish(msg.id)
        return terminal_result(reply)

    async def _connect(self) -> anyio.abc.ByteStream:
        try:
            stream = await anyio.connect_unix(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"no daemon at {self.socket_path} ({exc.strerror}); start it with `claifd`"
            ) from exc
        except OSError as exc:
            raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        try:
            with anyio.fail_after(self.timeout):
                await stream.send(self._protocol.connect())
                welcome = None
                while welcome is None:
                    welcome = self._protocol.receive_welcome(await stream.receive(RECV_SIZE))
        except BaseException as exc:
            await anyio.aclose_forcefully(stream)
            if isinstance(exc, TimeoutError):
                raise Timeout("daemon did not answer the handshake") from exc
            if isinstance(exc, (anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                raise DaemonUnavailable("daemon closed the connection during the handshake") from exc
            raise
        self.daemon_version = welcome.daemon_version
        self.capabilities = tuple(welcome.capabilities)
        self._stream = stream
        return stream

    async def _send(self, msg: Request) -> None:
        frame = bytes(encode_frame(msg))
        async with self._send_lock:
            stream = self._stream or await self._connect()
            try:
                await stream.send(frame)
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                await self._drop_connection()
                if self._demux.others_in_flight(msg.id) or isinstance(msg, Cancel):
                    raise DaemonUnavailable("connection to the daemon was lost") from exc
            # Nothing was delivered on a dead connection: reconnect, resend once.
            stream = await self._connect()
            try:
                await stream.send(frame)
            except (anyio.BrokenResourceError, OSError) as exc:
                await self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc

    async def _drop_connection(self) -> None:
        stream, self._stream = self._stream, None
        self._demux.reset()
        if stream is not None:
            await anyio.aclose_forcefully(stream)

    async def _next_reply(self, rid: int) -> Reply:
        box = self._demux.mailboxes[rid]
        while not box:
            if self._reading:
                if self._filed is None:
                    self._filed = anyio.Event()
                await self._filed.wait()
                continue
            self._reading = True
            try:
                await self._read_frames()
            finally:
                self._reading = False
                filed, self._filed = self._filed, None
                if filed is not None:
                    filed.set()
        return box.popleft()

    async def _read_frames(self) -> None:
        stream = self._stream
        if stream is None:
            raise DaemonUnavailable("not connected to the daemon")
        try:
            with anyio.fail_after(self.timeout):
                data = await stream.receive(RECV_SIZE)
        except TimeoutError as exc:
            raise Timeout(f"no reply from the daemon within {self.timeout}s") from exc
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            await self._drop_connection()
            raise DaemonUnavailable("the daemon closed the connection") from exc
        try:
            failure = self._demux.feed(data)
        except ProtocolError:
            await self._drop_connection()
            raise
        if failure is not None:
            await self._drop_connection()
            raise failure

    async def _abandon(self, rid: int) -> None:
        cancel = self._protocol.give_up(rid)
        if cancel is None or self._stream is None:
            return
        # Shielded: this often runs because the caller was cancelled.
        with anyio.CancelScope(shield=True):
            try:
                await self._send(cancel)
            except ClaifError:
                pass


class AsyncCompletionStream:
    """Async iterator of text deltas; `response` holds the final message at the end."""

    def __init__(self, client: AsyncClient, request: CompletionRequest) -> None:
        self._client = client
        self._request = request
        self._rid: int | None = None
        self._finished = False
        self.response: CompletionResponse | None = None
        # For a send within a session: {session_id, message_index, dropped, model}.
        self.info: Any = None

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def __anext__(self) -> str:
        client = self._client
        if self._rid is None:
            self._rid = client._protocol.next_id()
            client._demux.open(self._rid)
            try:
                await client._send(Complete(id=self._rid, request=self._request, stream=True))
            except BaseException:
                client._demux.finish(self._rid)
                self._finished = True
                raise
        while not self._finished:
            try:
                reply = await client._next_reply(self._rid)
            except BaseException:
                await self.aclose()
                raise
            if isinstance(reply, Chunk):
                if reply.text:
                    return reply.text
                continue
            self._finished = True
            client._demux.finish(self._rid)
            done = terminal_result(reply)
            if not isinstance(done, Done):
                raise ProtocolError(f"unexpected {type(done).__name__} frame ending a stream")
            self.response = done.response
            self.info = done.value
        raise StopAsyncIteration

    async def until_done(self) -> CompletionResponse:
        async for _ in self:
            pass
        assert self.response is not None
        return self.response

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            if self._rid is not None:
                await self._client._abandon(self._rid)

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
