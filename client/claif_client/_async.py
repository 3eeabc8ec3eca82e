"""The client API, written once: `AsyncClient` here, and `Client` in
`_sync.py`, generated from this file by `client/scripts/unasync.py` (async
tokens dropped, `AsyncIO` -> `SyncIO`). Edit this file, then run the script;
a test fails when `_sync.py` is out of date.

The connection's rules (handshake, ids, reply filing, cancel) are
`connection.ClientConnection`'s; the I/O is the `_io` object's: anyio streams
for the async client, a blocking socket with threads taking turns for the
sync one (`_async_io.py`, `_sync_io.py`). A sync stream sends its request at
once, an async one when it is first iterated (`opened`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ._async_io import AsyncIO
from ._async_stream import AsyncCompletionStream
from ._demux import terminal_result
from ._requests import CacheArg, MessagesArg, build_request, coerce_request, split_batch
from ._version import __version__
from .connection import DEFAULT_TIMEOUT, ClientConnection
from .errors import ProtocolError
from .paths import resolve_socket_path
from .protocol import (
    Batch,
    BatchItem,
    CacheClear,
    CacheDelete,
    CacheStats,
    Chunk,
    Complete,
    CompletionRequest,
    CompletionResponse,
    ConfigGet,
    ConfigReload,
    ConfigSet,
    ConfigShow,
    ConfigSources,
    ConfigUnset,
    ConfigValidate,
    Done,
    GetSpend,
    GetStatus,
    Health,
    Metrics,
    Models,
    Ping,
    Reply,
    Request,
    RequestLog,
    Result,
    SessionCreate,
    SessionDelete,
    SessionExport,
    SessionFork,
    SessionGet,
    SessionImport,
    SessionList,
    SessionRecover,
)

if TYPE_CHECKING:
    from .openai_compat import AsyncChat, AsyncMessages

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
        self._chat: Any = None
        self._messages: Any = None
        # The protocol's rules without I/O: handshake, ids, replies by id, cancel.
        self._protocol = ClientConnection(client_name)
        self._demux = self._protocol.demux
        self._io = AsyncIO(self.socket_path, timeout, self._protocol)

    @property
    def daemon_version(self) -> str | None:
        welcome = self._protocol.welcome
        return welcome.daemon_version if welcome is not None else None

    @property
    def capabilities(self) -> tuple[str, ...]:
        welcome = self._protocol.welcome
        return tuple(welcome.capabilities) if welcome is not None else ()

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

    @property
    def messages(self) -> AsyncMessages:
        """The Anthropic-style facade: `client.messages.create(...)`, `client.messages.stream(...)`."""
        if self._messages is None:
            from .openai_compat import AsyncMessages

            self._messages = AsyncMessages(self)
        return self._messages  # type: ignore[no-any-return]

    async def ping(self) -> None:
        await self._call(Ping(id=self._protocol.next_id()))

    async def status(self) -> dict[str, Any]:
        return await self._value(GetStatus(id=self._protocol.next_id()))  # type: ignore[no-any-return]

    async def spend(self) -> dict[str, Any]:
        """What calls cost today and this month (by provider, model and namespace), what the caches saved,
        the budgets; `{"today": {"usd": ...}, "month": {"usd": ...}, ...}`."""
        return await self._value(GetSpend(id=self._protocol.next_id()))  # type: ignore[no-any-return]

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

    async def session_recover(self) -> dict[str, Any]:
        """Acknowledge the damaged session files the daemon moved aside: `{acknowledged: [...]}`."""
        return await self._value(SessionRecover(id=self._protocol.next_id()))  # type: ignore[no-any-return]

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

    async def models(self, refresh: bool = False) -> dict[str, Any]:
        """{models: [{id, provider}], aliases, default, errors}: what the configured providers offer."""
        return await self._value(Models(id=self._protocol.next_id(), refresh=refresh))  # type: ignore[no-any-return]

    async def request_log(self, limit: int = 20, query: str | None = None) -> list[dict[str, Any]]:
        """The request log, newest last: time, front, model, outcome, latency, tokens, cost, and the prompt,
        system prompt and answer (unless log.content is off); `query`: only those whose prompt or answer
        holds it."""
        return await self._value(RequestLog(id=self._protocol.next_id(), limit=limit, query=query))  # type: ignore[no-any-return]

    async def config_unset(self, key: str, scope: str = "runtime") -> dict[str, Any]:
        """Remove a dotted key from a layer, so the layers below show through."""
        return await self._value(ConfigUnset(id=self._protocol.next_id(), key=key, scope=scope))  # type: ignore[no-any-return]

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
        `{index, ok, done, total}` as each item finishes. A batch larger than
        one frame is sent as several, one after the other (`split_batch`)."""
        reqs = [coerce_request(r, f"request {i}") for i, r in enumerate(requests)]
        items: list[BatchItem] = []
        for start, part in split_batch(reqs):
            items += await self._batch_part(part, start, len(reqs), concurrency, on_progress)
        return items

    async def _batch_part(self, reqs: list[CompletionRequest], start: int, total: int, concurrency: int | None,
                          on_progress: Callable[[dict[str, Any]], None] | None) -> list[BatchItem]:
        rid = self._protocol.next_id()
        self._demux.open(rid)
        # Each item arrives with its progress frame (`stream_results`), so no
        # batch is too large for one reply and nothing finished is lost.
        items: list[BatchItem | None] = [None] * len(reqs)
        try:
            await self._io.send(Batch(id=rid, requests=reqs, concurrency=concurrency, stream_results=True))
            while True:
                reply = await self._io.next_reply(rid)
                if not isinstance(reply, Chunk):
                    break
                progress = reply.data
                item = progress.pop("item", None)
                if item is not None:
                    converted = msgspec.convert(item, BatchItem)
                    items[converted.index] = converted
                    converted.index += start
                if on_progress is not None:
                    progress.update(index=progress["index"] + start, done=progress["done"] + start, total=total)
                    on_progress(progress)
        except BaseException:
            await self._io.give_up(rid)
            raise
        self._demux.finish(rid)
        result = terminal_result(reply)
        if not isinstance(result, Result):
            raise ProtocolError(f"unexpected {type(result).__name__} frame ending a batch")
        missing = [i for i, item in enumerate(items) if item is None]
        if missing:
            raise ProtocolError(f"the daemon ended the batch without {len(missing)} of its items")
        return items  # type: ignore[return-value]

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
        return self.stream_request(request)

    def stream_request(self, request: CompletionRequest) -> AsyncCompletionStream:
        stream = AsyncCompletionStream(self, request)
        self._io.opened(stream)
        return stream

    async def aclose(self) -> None:
        await self._io.aclose()
        self._demux.mailboxes.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "connected" if self._io.connected else "idle"
        return f"<AsyncClient {state} socket={str(self.socket_path)!r} in_flight={len(self._demux.mailboxes)}>"

    # ------------------------------------------------------------ plumbing

    async def _call(self, msg: Request) -> Reply:
        self._demux.open(msg.id)
        try:
            await self._io.send(msg)
            reply = await self._io.next_reply(msg.id)
        except BaseException:
            await self._io.give_up(msg.id)
            raise
        self._demux.finish(msg.id)
        return terminal_result(reply)

    async def _send(self, msg: Request) -> None:
        await self._io.send(msg)


