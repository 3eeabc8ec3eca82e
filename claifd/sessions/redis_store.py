"""Sessions on Redis (`session.backend: redis`): a conversation follows its
person between machines.

    {prefix}s:{ID}      the session's document without its messages (msgpack)
    {prefix}s:{ID}:m    list: its messages, msgpack, in order
    {prefix}sessions    sorted set: ids by last update (listing)

({ID} in braces: a Redis Cluster hash tag, so a session's two keys share a
slot and its changes are one transaction; the listing index is updated
after it.) An append is one RPUSH of the new messages: two daemons
appending to one session lose nothing and keep one order, and
RPUSH's answer (the new length) tells a daemon whether someone else appended
meanwhile (`AppendResult.conflict`), in which case its memory copy is dropped.
A daemon's memory copy is validated on every read by the list's length
(`length`), so it is never served stale: a longer list is read from where
the copy ends.

Durability: an operation is acknowledged once Redis has applied it; what
survives a Redis crash is what Redis persists — with `appendonly yes` and
`appendfsync always`, every acknowledged message; with `everysec`, all but
the last second's (README). Redis down: every session operation fails with
`storage_error`, nothing is acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ..errors import StorageError
from .model import Session, SessionMessage, SessionSummary
from .store import AppendMessages, CreateSession, Op

__all__ = ["RedisSessionStore"]


class _Meta(msgspec.Struct, array_like=True):
    title: str
    model: str | None
    system: str | None
    metadata: dict[str, Any] | None
    created: float
    updated: float


_meta_enc = msgspec.msgpack.Encoder().encode
_meta_dec = msgspec.msgpack.Decoder(_Meta).decode
_msg_enc = msgspec.msgpack.Encoder().encode
_msg_dec = msgspec.msgpack.Decoder(SessionMessage).decode


def _bytes(raw: Any) -> bytes:
    return raw if isinstance(raw, bytes) else str(raw).encode()


class RedisSessionStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.index = f"{prefix}sessions"
        self.errors = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"<RedisSessionStore {self.prefix} errors={self.errors}>"

    def _meta(self, session_id: str) -> str:
        return f"{self.prefix}s:{{{session_id}}}"

    def _messages(self, session_id: str) -> str:
        return f"{self.prefix}s:{{{session_id}}}:m"

    async def _run(self, what: str, coro: Any) -> Any:
        try:
            result = await coro
        except StorageError:
            raise
        except Exception as exc:
            self.errors += 1
            self.error = f"{type(exc).__name__}: {exc}"
            raise StorageError(f"the session store (redis) could not {what}: {self.error}") from exc
        self.error = None
        return result

    # ------------------------------------------------------------ writing

    async def apply(self, ops: Sequence[Op]) -> list[int]:
        """Apply `ops` in one transaction; the list lengths RPUSH answered, one per append."""
        async def run() -> list[int]:
            lengths: list[int] = []
            for op in ops:  # each a transaction on one session's keys (one slot), then the index
                async with self.client.pipeline(transaction=True) as pipe:
                    if isinstance(op, CreateSession):
                        s = op.session
                        pipe.set(self._meta(s.id), _meta_enc(_Meta(s.title, s.model, s.system, s.metadata,
                                                                    s.created, s.updated)))
                        pipe.delete(self._messages(s.id))
                        if s.messages:
                            pipe.rpush(self._messages(s.id), *[_msg_enc(m) for m in s.messages])
                    elif isinstance(op, AppendMessages):
                        pipe.rpush(self._messages(op.session_id), *[_msg_enc(m) for m in op.messages])
                    else:
                        pipe.delete(self._meta(op.session_id))
                        pipe.delete(self._messages(op.session_id))
                    results = await pipe.execute()
                if isinstance(op, CreateSession):
                    await self.client.zadd(self.index, {op.session.id: op.session.updated})
                elif isinstance(op, AppendMessages):
                    lengths.append(int(results[0]))
                    await self.client.zadd(self.index, {op.session_id: op.updated}, xx=True)
                else:
                    await self.client.zrem(self.index, op.session_id)
            return lengths

        result: list[int] = await self._run("save the change", run())
        return result

    # ------------------------------------------------------------ reading

    async def load(self, session_id: str) -> Session | None:
        async def run() -> Session | None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self._meta(session_id))
                pipe.lrange(self._messages(session_id), 0, -1)
                pipe.zscore(self.index, session_id)
                raw, messages, updated = await pipe.execute()
            if raw is None:
                return None
            meta = _meta_dec(_bytes(raw))
            return Session(id=session_id, title=meta.title, model=meta.model, system=meta.system,
                           metadata=meta.metadata, created=meta.created,
                           updated=float(updated) if updated is not None else meta.updated,
                           messages=[_msg_dec(_bytes(m)) for m in messages])

        result: Session | None = await self._run("read the session", run())
        return result

    async def length(self, session_id: str) -> int | None:
        """How many messages the session has now (None: it is gone)."""
        async def run() -> int | None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.exists(self._meta(session_id))
                pipe.llen(self._messages(session_id))
                exists, count = await pipe.execute()
            return int(count) if exists else None

        result: int | None = await self._run("read the session", run())
        return result

    async def tail(self, session_id: str, start: int) -> list[SessionMessage]:
        raws = await self._run("read the session", self.client.lrange(self._messages(session_id), start, -1))
        return [_msg_dec(_bytes(m)) for m in raws]

    async def exists(self, session_id: str) -> bool:
        return bool(await self._run("read the session", self.client.exists(self._meta(session_id))))

    async def list(self, metadata: Mapping[str, Any] | None, offset: int,
                   limit: int) -> tuple[int, list[SessionSummary]]:
        """Sessions whose metadata has every given key = value, most recently updated first."""
        async def run() -> tuple[int, list[SessionSummary]]:
            scored = await self.client.zrevrange(self.index, 0, -1, withscores=True)
            updated = {_bytes(i).decode(): float(score) for i, score in scored}
            ids = list(updated)
            rows: list[SessionSummary] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                async with self.client.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.get(self._meta(session_id))
                        pipe.llen(self._messages(session_id))
                    results = await pipe.execute()
                for i, session_id in enumerate(chunk):
                    raw, count = results[2 * i], results[2 * i + 1]
                    if raw is None:
                        continue
                    meta = _meta_dec(_bytes(raw))
                    if metadata and any((meta.metadata or {}).get(k) != v for k, v in metadata.items()):
                        continue
                    rows.append(SessionSummary(id=session_id, title=meta.title, updated=updated[session_id],
                                               message_count=int(count), model=meta.model, metadata=meta.metadata))
            rows.sort(key=lambda r: (-r.updated, r.id))
            return len(rows), rows[offset:offset + limit]

        result: tuple[int, list[SessionSummary]] = await self._run("list sessions", run())
        return result

    async def count(self) -> int:
        return int(await self._run("count sessions", self.client.zcard(self.index)))

    async def probe(self) -> None:
        await self._run("answer a ping", self.client.ping())

    async def at_risk(self) -> str | None:
        """What a Redis crash would lose, by its persistence settings, or None
        when every acknowledged write is in its append-only file."""
        try:
            found = await self.client.config_get("append*")
        except Exception as exc:  # CONFIG renamed or refused (a managed Redis): say we cannot tell
            return f"cannot read Redis' persistence settings ({type(exc).__name__}); make sure appendonly is on"
        appendonly = str(found.get("appendonly", "")).lower()
        fsync = str(found.get("appendfsync", "")).lower()
        if appendonly != "yes":
            return ("Redis runs without its append-only file (appendonly no): session messages acknowledged since "
                    "its last snapshot are lost if it crashes; set appendonly yes")
        if fsync == "no":
            return ("Redis' append-only file is never fsynced (appendfsync no): the last ~30 s of acknowledged "
                    "session messages can be lost if the machine crashes; set appendfsync everysec or always")
        return None
