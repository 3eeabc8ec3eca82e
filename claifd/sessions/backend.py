"""Where sessions are kept, behind one interface: a store per class.

    LocalSessions    SQLite on this machine (store.py): every change in a
                     group commit in the writer thread, reads in the reader
                     thread; damage is a StorageError for that call only
    RedisSessions    a team's daemons on one Redis (redis_store.py): memory
                     copies are validated against Redis before use

`SessionService` (service.py) keeps the memory LRU and the per-session
locks, and reaches the store through `SessionBackend` only. A new store is
one class implementing it and a line in `SessionService._build_backend`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from ..errors import StorageError
from .model import Session, SessionSummary
from .redis_store import RedisSessionStore
from .store import DamagedSession, Op, SessionStore

__all__ = ["LocalSessions", "RedisSessions", "SessionBackend"]

log = structlog.get_logger("claifd.sessions")


class SessionBackend(Protocol):
    name: str  # `session.backend`: "local" or "redis"
    # Other daemons write it too: a memory copy is checked (`current`) before use.
    shared: bool
    store_error: str | None  # why it could not open (every session call then fails)
    write_error: str | None  # the last write's failure, until a write succeeds again
    damaged: int

    async def open(self, task_group: anyio.abc.TaskGroup) -> int:
        """Open it; the number of sessions it holds."""

    async def aclose(self) -> None: ...

    async def apply(self, ops: Sequence[Op]) -> list[int] | None:
        """Return once `ops` are durable (fsynced, or applied by Redis):
        the sessions' new lengths where the store knows them. StorageError if not."""

    async def current(self, cached: Session | None, session_id: str) -> Session | None:
        """The session as the store has it now: `cached` when it is still
        right (extended by what others appended), else loaded; None if none."""

    async def exists(self, session_id: str) -> bool: ...

    async def summaries(self, metadata: Mapping[str, Any] | None, offset: int,
                   limit: int) -> tuple[int, list[SessionSummary]]: ...

    async def probe(self, now: float) -> None: ...

    async def at_risk(self) -> str | None:
        """What a crash of the store would lose that was acknowledged (health warns), or None."""

    def stats(self) -> dict[str, Any]: ...

    def quarantined(self) -> list[Any]: ...

    def unacknowledged(self) -> list[dict[str, Any]]:
        """Damaged files moved aside that nobody has acknowledged (health: unhealthy)."""

    async def acknowledge(self) -> list[dict[str, Any]]: ...


class _Pending:
    __slots__ = ("ops", "done", "error")

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        self.done = anyio.Event()
        self.error: BaseException | None = None


class LocalSessions:
    name = "local"
    shared = False

    def __init__(self, directory: Path) -> None:
        self.store = SessionStore(directory)
        self._queue: list[_Pending] = []
        self._wakeup = anyio.Event()
        self._write_thread = anyio.CapacityLimiter(1)
        self._read_thread = anyio.CapacityLimiter(1)
        self._writer_gone = False
        self._writer_scope: anyio.CancelScope | None = None
        self.commits = 0
        self.write_errors = 0
        self.write_error: str | None = None
        self.store_error: str | None = None
        self.damaged = 0

    def __repr__(self) -> str:
        return f"<LocalSessions {self.store.path} pending={len(self._queue)}>"

    async def open(self, task_group: anyio.abc.TaskGroup) -> int:
        scope = self._writer_scope = anyio.CancelScope()

        async def writer() -> None:
            with scope:
                await self._writer()

        task_group.start_soon(writer)
        self.store_error = None
        try:
            await anyio.to_thread.run_sync(self.store.open, limiter=self._write_thread)
            return int((await self._read(self.store.counts))[0])
        except Exception as exc:
            self.store_error = f"{type(exc).__name__}: {exc}"
            log.error("session store unavailable; session requests will fail until it is fixed and the "
                      "daemon restarted", path=str(self.store.path), error=self.store_error)
            return 0

    async def aclose(self) -> None:
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        with anyio.CancelScope(shield=True):
            if self._queue:
                await self._commit(self._take())
            await anyio.to_thread.run_sync(self.store.close, limiter=self._write_thread)

    async def apply(self, ops: Sequence[Op]) -> list[int] | None:
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

    async def current(self, cached: Session | None, session_id: str) -> Session | None:
        if cached is not None:
            return cached  # this daemon is the only writer: memory is the truth
        loaded: Session | None = await self._read(self.store.load, session_id)
        return loaded

    async def exists(self, session_id: str) -> bool:
        return bool(await self._read(self.store.exists, session_id))

    async def summaries(self, metadata: Mapping[str, Any] | None, offset: int,
                   limit: int) -> tuple[int, list[SessionSummary]]:
        return await self._read(self.store.list, metadata, offset, limit)  # type: ignore[no-any-return]

    async def probe(self, now: float) -> None:
        """Write a row and read it back through the other connection."""
        await anyio.to_thread.run_sync(self.store.probe_write, now, limiter=self._write_thread)
        seen = await self._read(self.store.probe_read)
        if seen != now:
            raise StorageError(f"the probe row read back {seen!r}, not {now!r}")

    async def at_risk(self) -> str | None:
        return None  # committed (fsynced, WAL) before each acknowledgement

    def stats(self) -> dict[str, Any]:
        return {"commits": self.commits, "write_errors": self.write_errors, "write_error": self.write_error,
                "store_error": self.store_error, "damaged": self.damaged, "quarantined": self.quarantined(),
                "synchronous": self.store.synchronous, "remote_error": None}

    def quarantined(self) -> list[Any]:
        return list(self.store.quarantined)

    def unacknowledged(self) -> list[dict[str, Any]]:
        return list(self.store.unacknowledged)

    async def acknowledge(self) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(self.store.acknowledge, limiter=self._write_thread)


class RedisSessions:
    name = "redis"
    shared = True

    def __init__(self, client: Any, prefix: str) -> None:
        self.remote = RedisSessionStore(client, prefix)
        # Redis' own failures are StorageErrors per call (and `remote_error`).
        self.store_error: str | None = None
        self.write_error: str | None = None
        self.damaged = 0

    def __repr__(self) -> str:
        return f"<RedisSessions {self.remote!r}>"

    async def open(self, task_group: anyio.abc.TaskGroup) -> int:
        try:
            return await self.remote.count()
        except StorageError as exc:
            log.warning("session store (redis) unavailable; session requests fail until it answers", error=str(exc))
            return 0

    async def aclose(self) -> None:
        try:
            await self.remote.client.aclose()
        except Exception:
            pass

    async def apply(self, ops: Sequence[Op]) -> list[int] | None:
        with anyio.CancelScope(shield=True):  # once sent, the outcome must be known
            lengths = await self.remote.apply(ops)
        return lengths

    async def current(self, cached: Session | None, session_id: str) -> Session | None:
        """The memory copy validated against Redis (extended by what other
        daemons appended), or the session loaded anew."""
        if cached is not None:
            count = await self.remote.length(session_id)
            if count is None:
                return None
            if count > len(cached.messages):
                cached.messages.extend(await self.remote.tail(session_id, len(cached.messages)))
            if count == len(cached.messages):
                return cached
            # shorter than our copy: not ours to trust
        return await self.remote.load(session_id)

    async def exists(self, session_id: str) -> bool:
        return await self.remote.exists(session_id)

    async def summaries(self, metadata: Mapping[str, Any] | None, offset: int,
                   limit: int) -> tuple[int, list[SessionSummary]]:
        return await self.remote.list(metadata, offset, limit)

    async def probe(self, now: float) -> None:
        await self.remote.probe()

    async def at_risk(self) -> str | None:
        return await self.remote.at_risk()

    def stats(self) -> dict[str, Any]:
        return {"commits": 0, "write_errors": 0, "write_error": None, "store_error": None, "damaged": 0,
                "quarantined": [], "synchronous": None, "remote_error": self.remote.error}

    def quarantined(self) -> list[Any]:
        return []

    def unacknowledged(self) -> list[dict[str, Any]]:
        return []

    async def acknowledge(self) -> list[dict[str, Any]]:
        return []
