"""Conversation sessions as the daemon serves them.

Memory is an LRU under `session.memory_budget` (`lru.py`); the truth is the
SQLite store (`store.py`). Every change is committed -- in a group commit
with whatever else is waiting, in the writer thread -- before the request
that made it is answered, so eviction and crashes never lose an acknowledged
message. Sends to one session run one at a time, in arrival order.

A send appends the new message(s) and the reply together, after the upstream
call succeeded: a failed or cancelled send leaves the session as it was (and
the client, which got an error, can simply retry).
"""

from __future__ import annotations

import sqlite3
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
from ..errors import BadRequest, NotFound, StorageError
from ..redis_client import store_source
from ..types import DeltaCallback
from .context import estimate_tokens, trim
from .lru import SessionLRU
from .model import Session, SessionMessage, SessionSummary, new_session_id
from .redis_store import RedisSessionStore
from .store import AppendMessages, CreateSession, DamagedSession, DeleteSession, Op, SessionStore

__all__ = ["SessionService", "export_markdown"]

log = structlog.get_logger("claifd.sessions")

CompleteFn = Callable[[CompletionRequest, DeltaCallback | None], Awaitable[CompletionResponse]]


class _Pending:
    __slots__ = ("ops", "done", "error")

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        self.done = anyio.Event()
        self.error: BaseException | None = None


class SessionService:
    def __init__(self, config: SessionConfig, *, redis: RedisConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lru = SessionLRU(int(config.memory_budget))
        self.store = SessionStore(Path(config.directory).expanduser())
        # session.backend = redis: the sessions live there; memory is a validated cache.
        self.remote: RedisSessionStore | None = None
        self.redis_config = redis
        self._source = self._backend_source()
        self._switching = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        if self._source[0] == "redis":
            self.remote = self._make_remote()
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}
        self._queue: list[_Pending] = []
        self._wakeup = anyio.Event()
        self._write_thread = anyio.CapacityLimiter(1)
        self._writer_gone = False
        self._read_thread = anyio.CapacityLimiter(1)
        self.total = 0
        self.loads = 0
        self.commits = 0
        self.write_errors = 0
        # The last write's failure, until a write succeeds again (health).
        self.write_error: str | None = None
        # Why the store could not open at all (every session call then fails
        # with storage_error; the rest of the daemon serves on).
        self.store_error: str | None = None
        self.damaged = 0

    def __repr__(self) -> str:
        return f"<SessionService {self.lru!r} total={self.total} pending={len(self._queue)}>"

    # ------------------------------------------------------------ lifecycle

    def _backend_source(self) -> tuple[Any, ...]:
        return store_source(self.config.backend, self.redis_config, self.config.directory)

    def _make_remote(self) -> RedisSessionStore:
        from ..redis_client import make_client  # imports redis-py: only when configured

        assert self.redis_config is not None
        return RedisSessionStore(make_client(self.redis_config), self.redis_config.prefix)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        task_group.start_soon(self._writer)
        await self._open()

    async def _open(self) -> None:
        if self.remote is not None:
            try:
                self.total = await self.remote.count()
            except StorageError as exc:
                log.warning("session store (redis) unavailable; session requests fail until it answers",
                            error=str(exc))
            return
        self.store_error = None
        try:
            await anyio.to_thread.run_sync(self.store.open, limiter=self._write_thread)
            self.total = (await self._read(self.store.counts))[0]
        except Exception as exc:
            self.store_error = f"{type(exc).__name__}: {exc}"
            log.error("session store unavailable; session requests will fail until it is fixed and the "
                      "daemon restarted", path=str(self.store.path), error=self.store_error)

    async def _close(self) -> None:
        if self.remote is not None:
            try:
                await self.remote.client.aclose()
            except Exception:
                pass
            return
        if self._queue:
            await self._commit(self._take())
        await anyio.to_thread.run_sync(self.store.close, limiter=self._write_thread)

    async def _switch(self) -> None:
        """`session.backend`, `session.directory` or where Redis is changed:
        the old store is closed (after its pending writes), the new one opened,
        memory copies dropped. Sessions are not copied between stores."""
        async with self._switching:
            source = self._backend_source()
            if source == self._source:
                return
            with anyio.CancelScope(shield=True):
                await self._close()
                for session_id in self.lru.ids():
                    self.lru.remove(session_id)
                if source[0] == "redis":
                    self.remote = self._make_remote()
                else:
                    self.remote = None
                    self.store = SessionStore(Path(self.config.directory).expanduser())
                await self._open()
            log.info("session store switched", was=self._source[0], now=source[0])
            self._source = source

    def reconfigure_redis(self, redis: RedisConfig) -> None:
        self.redis_config = redis
        self._maybe_switch()

    def _maybe_switch(self) -> None:
        if self._backend_source() != self._source and self._task_group is not None:
            self._task_group.start_soon(self._switch)

    async def aclose(self) -> None:
        await self._close()

    def reconfigure(self, config: SessionConfig) -> None:
        """A reloaded `session` section: a smaller budget evicts at once (the
        store keeps every session); a new `backend` or `directory` switches
        the store (`_switch`)."""
        self.config = config
        self.lru.resize(int(config.memory_budget))
        self._maybe_switch()

    # -------------------------------------------------------------- writing

    async def _persist(self, *ops: Op) -> list[int] | None:
        """Return once `ops` are committed (fsynced, or applied by Redis); raise StorageError if not."""
        if self.remote is not None:
            with anyio.CancelScope(shield=True):  # once sent, the outcome must be known
                return await self.remote.apply(ops)
        if self.store_error is not None:
            raise StorageError(f"the session store is unavailable: {self.store_error}")
        pending = _Pending(list(ops))
        with anyio.CancelScope(shield=True):  # once queued, the outcome must be known
            if self._writer_gone:
                await self._commit([pending])
            else:
                self._queue.append(pending)
                self._wakeup.set()
                await pending.done.wait()
        if pending.error is not None:
            error = pending.error
            name = getattr(error, "sqlite_errorname", None)  # e.g. SQLITE_FULL, SQLITE_IOERR_WRITE
            raise StorageError(f"the session store could not save the change: {error}"
                               + (f" ({name})" if name else "")) from error
        return None

    def _take(self) -> list[_Pending]:
        batch, self._queue = self._queue, []
        return batch

    async def _writer(self) -> None:
        """Group commit: everything waiting goes in one transaction."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._queue:
                    await self._commit(self._take())
        finally:
            # Cancelled at shutdown: nobody waiting on a commit may be left hanging.
            self._writer_gone = True
            with anyio.CancelScope(shield=True):
                while self._queue:
                    await self._commit(self._take())

    async def _commit(self, batch: list[_Pending]) -> None:
        ops = [op for pending in batch for op in pending.ops]
        try:
            await anyio.to_thread.run_sync(self.store.apply, ops, limiter=self._write_thread)
            self.write_error = None
        except Exception:
            # One bad change must not sink the others: retry them one by one.
            for pending in batch:
                try:
                    await anyio.to_thread.run_sync(self.store.apply, pending.ops, limiter=self._write_thread)
                except Exception as exc:
                    log.warning("session store write failed", error=f"{type(exc).__name__}: {exc}")
                    self.write_errors += 1
                    self.write_error = f"{type(exc).__name__}: {exc}"
                    pending.error = exc
                else:
                    self.write_error = None
        self.commits += 1
        for pending in batch:
            pending.done.set()

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read in the reader thread; damage is a StorageError for this call only."""
        if self.store_error is not None:
            raise StorageError(f"the session store is unavailable: {self.store_error}")
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._read_thread)
        except DamagedSession as exc:
            self.damaged += 1
            log.error("damaged session", error=str(exc))
            raise StorageError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            self.damaged += 1
            log.error("session store read failed", error=f"{type(exc).__name__}: {exc}")
            raise StorageError(f"the session store could not be read: {exc}") from exc

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
        await self._persist(CreateSession(session))
        self.total += 1
        self.lru.put(session)
        return session

    def in_memory(self, session_id: str) -> Session | None:
        """The session if memory holds it (a read: no I/O, no await), else None.
        Never with a shared backend: there a memory copy is validated first (`get`)."""
        if self.remote is not None:
            return None
        session = self.lru.get(session_id)
        if session is not None:
            session.accessed = self.clock()
        return session

    async def get(self, session_id: str) -> Session:
        if self.remote is not None:
            return await self._get_remote(session_id)
        session = self.lru.get(session_id)
        if session is None:
            session = await self._read(self.store.load, session_id)
            if session is None:
                raise NotFound(f"no session {session_id!r}")
            self.loads += 1
            self.lru.put(session)
        session.accessed = self.clock()
        return session

    async def _get_remote(self, session_id: str) -> Session:
        """The memory copy, validated against Redis (extended by what other
        daemons appended), or the session loaded anew."""
        assert self.remote is not None
        session = self.lru.get(session_id)
        if session is not None:
            count = await self.remote.length(session_id)
            if count is None:
                self.lru.remove(session_id)
                raise NotFound(f"no session {session_id!r}")
            if count > len(session.messages):
                session.messages.extend(await self.remote.tail(session_id, len(session.messages)))
                self.lru.put(session)
            if count == len(session.messages):
                session.accessed = self.clock()
                return session
            self.lru.remove(session_id)  # shorter than our copy: not ours to trust
        loaded = await self.remote.load(session_id)
        if loaded is None:
            raise NotFound(f"no session {session_id!r}")
        self.loads += 1
        self.lru.put(loaded)
        loaded.accessed = self.clock()
        return loaded

    async def _exists(self, session_id: str) -> bool:
        if self.remote is not None:
            return await self.remote.exists(session_id)
        return session_id in self.lru or bool(await self._read(self.store.exists, session_id))

    async def delete(self, session_id: str) -> None:
        async with self._lock(session_id):
            if not await self._exists(session_id):
                raise NotFound(f"no session {session_id!r}")
            await self._persist(DeleteSession(session_id))
            self.lru.remove(session_id)
            self.total -= 1

    async def list(self, metadata: dict[str, Any] | None, offset: int, limit: int) -> tuple[int, list[SessionSummary]]:
        if offset < 0 or not 1 <= limit <= 10_000:
            raise BadRequest("offset must be >= 0 and limit between 1 and 10000")
        if self.remote is not None:
            return await self.remote.list(metadata, offset, limit)
        return await self._read(self.store.list, metadata, offset, limit)  # type: ignore[no-any-return]

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
            lengths = await self._persist(AppendMessages(session_id, len(session.messages), appended, reply.time))
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

    async def probe(self) -> None:
        """Write a row and read it back through the other connection, or ping Redis (health)."""
        if self.remote is not None:
            await self.remote.probe()
            return
        at = self.clock()
        await anyio.to_thread.run_sync(self.store.probe_write, at, limiter=self._write_thread)
        seen = await self._read(self.store.probe_read)
        if seen != at:
            raise StorageError(f"the probe row read back {seen!r}, not {at!r}")

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
            "commits": self.commits,
            "write_errors": self.write_errors,
            "write_error": self.write_error,
            "store_error": self.store_error,
            "damaged": self.damaged,
            "quarantined": list(self.store.quarantined),
            "synchronous": self.store.synchronous,
            "backend": self._source[0],  # the store in use (a switch takes a moment)
            "remote_error": self.remote.error if self.remote is not None else None,
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
