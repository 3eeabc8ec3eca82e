"""Conversation sessions as the daemon serves them.

Memory is an LRU under `session.memory_budget` (`lru.py`); the truth is the
store behind it (`backend.py`: SQLite on this machine, or Redis for a team's
daemons). Every change is durable in the store -- on SQLite in a group
commit with whatever else is waiting -- before the request that made it is
answered, so eviction and crashes never lose an acknowledged message. Sends
to one session run one at a time, in arrival order.

A send appends the new message(s) and the reply together, after the upstream
call succeeded: a failed or cancelled send leaves the session as it was (and
the client, which got an error, can simply retry).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse, Message

from ..config import RedisConfig, SessionConfig
from ..errors import BadRequest, NotFound
from ..redis_client import store_source
from ..types import DeltaCallback
from .backend import LocalSessions, RedisSessions, SessionBackend
from .context import estimate_tokens, trim
from .lru import SessionLRU
from .model import Session, SessionMessage, SessionSummary, new_session_id
from .store import AppendMessages, CreateSession, DeleteSession

__all__ = ["SessionService", "export_markdown"]

log = structlog.get_logger("claifd.sessions")

CompleteFn = Callable[[CompletionRequest, DeltaCallback | None], Awaitable[CompletionResponse]]


class SessionService:
    def __init__(self, config: SessionConfig, *, redis: RedisConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lru = SessionLRU(int(config.memory_budget))
        self.redis_config = redis
        self._source = self._backend_source()
        self.backend: SessionBackend = self._build_backend(self._source)
        self._switching = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}
        self.total = 0
        self.loads = 0

    def __repr__(self) -> str:
        return f"<SessionService {self.lru!r} total={self.total} {self.backend!r}>"

    # The store's state, for health and status.
    @property
    def store_error(self) -> str | None:
        return self.backend.store_error

    @property
    def write_error(self) -> str | None:
        return self.backend.write_error

    @property
    def damaged(self) -> int:
        return self.backend.damaged

    # ------------------------------------------------------------ lifecycle

    def _backend_source(self) -> tuple[Any, ...]:
        return store_source(self.config.backend, self.redis_config, self.config.directory)

    def _build_backend(self, source: tuple[Any, ...]) -> SessionBackend:
        if source[0] == "redis":
            from ..redis_client import make_client  # imports redis-py: only when configured

            assert self.redis_config is not None
            return RedisSessions(make_client(self.redis_config), self.redis_config.prefix)
        return LocalSessions(Path(self.config.directory).expanduser())

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self.total = await self.backend.open(task_group)

    async def _switch(self) -> None:
        """`session.backend`, `session.directory` or where Redis is changed:
        the new store is opened and takes the requests that follow, memory
        copies are dropped, and the old store is closed (after its pending
        writes). Sessions are not copied between stores."""
        async with self._switching:
            source = self._backend_source()
            if source == self._source or self._task_group is None:
                return
            with anyio.CancelScope(shield=True):
                new = self._build_backend(source)
                total = await new.open(self._task_group)
                old, self.backend = self.backend, new
                was, self._source, self.total = self._source, source, total
                for session_id in self.lru.ids():
                    self.lru.remove(session_id)
                await old.aclose()
            log.info("session store switched", was=was[0], now=source[0])

    def reconfigure_redis(self, redis: RedisConfig) -> None:
        self.redis_config = redis
        self._maybe_switch()

    def _maybe_switch(self) -> None:
        if self._backend_source() != self._source and self._task_group is not None:
            self._task_group.start_soon(self._switch)

    async def aclose(self) -> None:
        await self.backend.aclose()

    def reconfigure(self, config: SessionConfig) -> None:
        """A reloaded `session` section: a smaller budget evicts at once (the
        store keeps every session); a new `backend` or `directory` switches
        the store (`_switch`)."""
        self.config = config
        self.lru.resize(int(config.memory_budget))
        self._maybe_switch()

    # ---------------------------------------------------------- operations

    async def create(
        self, title: str | None = None, model: str | None = None, system: str | None = None,
        metadata: dict[str, Any] | None = None, messages: list[SessionMessage] | None = None,
        session_id: str | None = None,
    ) -> Session:
        now = self.clock()
        session = Session(
            id=session_id or new_session_id(), title=title or "", model=model, system=system, metadata=metadata,
            created=now, updated=now, accessed=now, messages=messages or [],
        )
        await self.backend.apply([CreateSession(session)])
        self.total += 1
        self.lru.put(session)
        return session

    def in_memory(self, session_id: str) -> Session | None:
        """The session if memory holds it (a read: no I/O, no await), else None.
        Never with a shared backend: there a memory copy is validated first (`get`)."""
        if self.backend.shared:
            return None
        session = self.lru.get(session_id)
        if session is not None:
            session.accessed = self.clock()
        return session

    async def get(self, session_id: str) -> Session:
        cached = self.lru.get(session_id)
        session = await self.backend.current(cached, session_id)
        if session is None:
            if cached is not None:
                self.lru.remove(session_id)
            raise NotFound(f"no session {session_id!r}")
        if session is not cached:
            self.loads += 1
            self.lru.put(session)
        elif self.backend.shared:
            self.lru.put(session)  # re-accounted: other daemons may have extended it
        session.accessed = self.clock()
        return session

    async def _exists(self, session_id: str) -> bool:
        if not self.backend.shared and session_id in self.lru:
            return True
        return await self.backend.exists(session_id)

    async def delete(self, session_id: str) -> None:
        async with self._lock(session_id):
            if not await self._exists(session_id):
                raise NotFound(f"no session {session_id!r}")
            await self.backend.apply([DeleteSession(session_id)])
            self.lru.remove(session_id)
            self.total -= 1

    async def list(self, metadata: dict[str, Any] | None, offset: int, limit: int) -> tuple[int, list[SessionSummary]]:
        if offset < 0 or not 1 <= limit <= 10_000:
            raise BadRequest("offset must be >= 0 and limit between 1 and 10000")
        return await self.backend.summaries(metadata, offset, limit)

    async def fork(self, session_id: str, at: int | None, title: str | None) -> Session:
        source = await self.get(session_id)
        count = len(source.messages)
        upto = count - 1 if at is None else at
        if not -1 <= upto < count:
            raise BadRequest(f"message index {at} is out of range (the session has {count} messages)")
        messages = [msgspec.structs.replace(m) for m in source.messages[: upto + 1]]
        return await self.create(
            title=title or f"{source.title or source.id} (fork)", model=source.model, system=source.system,
            metadata=source.metadata, messages=messages,
        )

    async def import_document(self, doc: Any) -> Session:
        try:
            imported = msgspec.convert(doc, Session)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"not a session document: {exc}") from exc
        session_id = imported.id
        if not session_id or await self._exists(session_id):
            session_id = new_session_id()
        return await self.create(
            title=imported.title, model=imported.model, system=imported.system, metadata=imported.metadata,
            messages=imported.messages, session_id=session_id,
        )

    async def send(
        self, session_id: str, request: CompletionRequest, complete: CompleteFn,
        on_delta: DeltaCallback | None, max_tokens: int, recent: int,
    ) -> tuple[CompletionResponse, dict[str, Any]]:
        """Append `request.messages` and the model's reply to the session."""
        async with self._lock(session_id):
            session = await self.get(session_id)
            now = self.clock()
            new = [
                SessionMessage(role=m.role, content=m.content, time=now,
                               tokens=estimate_tokens(SessionMessage(role=m.role, content=m.content)))
                for m in request.messages
            ]
            system = request.system if request.system is not None else session.system
            system_text = system if isinstance(system, str) or system is None else None
            kept, dropped = trim([*session.messages, *new], system_text, max_tokens, recent)
            upstream = msgspec.structs.replace(
                request,
                messages=[Message(role=m.role, content=m.content) for m in kept],
                system=system,
                model=request.model or session.model,
                session=None,
            )
            response = await complete(upstream, on_delta)
            reply = SessionMessage(
                role="assistant", content=_reply_content(response), time=self.clock(),
                tokens=response.usage.output_tokens, model=response.model,
            )
            appended = [*new, reply]
            lengths = await self.backend.apply([AppendMessages(session_id, len(session.messages), appended, reply.time)])
            expected = len(session.messages) + len(appended)
            if lengths and lengths[0] != expected:
                # Another daemon appended meanwhile: Redis keeps one order; our copy goes.
                self.lru.remove(session_id)
                index = lengths[0] - 1
            else:
                session.messages.extend(appended)
                session.updated = session.accessed = reply.time
                self.lru.put(session)  # re-accounted at its new size
                index = len(session.messages) - 1
            info = {"session_id": session_id, "message_index": index, "dropped": dropped, "model": response.model}
            return response, info

    async def probe(self) -> str | None:
        """Write a row and read it back, or ping Redis (health); what a crash
        of the store would lose, if anything."""
        await self.backend.probe(self.clock())
        return await self.backend.at_risk()

    def _lock(self, session_id: str) -> _SessionLock:
        return _SessionLock(self._locks, session_id)

    # --------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        return {
            "in_memory": len(self.lru),
            "total": self.total,
            "memory_bytes": self.lru.bytes,
            "memory_budget_bytes": self.lru.budget,
            "evictions": self.lru.evictions,
            "loads": self.loads,
            **self.backend.stats(),
            "unacknowledged": self.backend.unacknowledged(),
            "backend": self._source[0],  # the store in use (a switch takes a moment)
        }


class _SessionLock:
    """A FIFO lock per session id, dropped when nobody holds or waits for it."""

    def __init__(self, table: dict[str, tuple[anyio.Lock, int]], session_id: str) -> None:
        self.table = table
        self.session_id = session_id

    async def __aenter__(self) -> None:
        lock, users = self.table.get(self.session_id, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self.table[self.session_id] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.table[self.session_id][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self.table[self.session_id]
        if users <= 1:
            del self.table[self.session_id]
        else:
            self.table[self.session_id] = (lock, users - 1)


def _reply_content(response: CompletionResponse) -> str | list[dict[str, Any]]:
    """Plain text when the reply is just text; its blocks when it holds more (tool calls)."""
    blocks = response.content
    if all(b.get("type") == "text" for b in blocks):
        return response.text
    return blocks


def export_markdown(session: Session) -> str:
    lines = [f"# {session.title or session.id}", ""]
    meta = [f"- id: `{session.id}`"]
    if session.model:
        meta.append(f"- model: `{session.model}`")
    if session.system:
        meta.append(f"- system: {session.system}")
    lines += meta + [""]
    for i, m in enumerate(session.messages):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.time)) if m.time else ""
        pin = " (pinned)" if m.pinned else ""
        lines.append(f"## {i}. {m.role}{pin} {when}".rstrip())
        lines.append("")
        if isinstance(m.content, str):
            lines.append(m.content)
        else:
            lines.append("```json")
            lines.append(msgspec.json.format(msgspec.json.encode(m.content), indent=2).decode())
            lines.append("```")
        lines.append("")
    return "\n".join(lines)
