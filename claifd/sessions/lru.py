"""Sessions in memory: an LRU bounded by accounted bytes (sans-IO).

`bytes` never exceeds `budget` after any call: putting a session (new, or
grown by a message) evicts the least recently used *other* sessions first; a
session larger than the whole budget is not kept in memory at all. Eviction
only forgets the memory copy: every session is in the durable store before
any request that changed it is acknowledged, and is reloaded from there.
"""

from __future__ import annotations

from collections import OrderedDict

from .model import Session, session_size

__all__ = ["SessionLRU"]


class SessionLRU:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self.evictions = 0
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def __repr__(self) -> str:
        return f"<SessionLRU sessions={len(self._sessions)} bytes={self.bytes}/{self.budget} evictions={self.evictions}>"

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions.move_to_end(session_id)
        return session

    def put(self, session: Session) -> list[str]:
        """Insert or re-account `session` as most recent; returns the evicted ids."""
        self.remove(session.id)
        size = session_size(session)
        if size > self.budget:
            return []
        evicted = self._shrink_to(self.budget - size)
        self._sessions[session.id] = session
        self._sizes[session.id] = size
        self.bytes += size
        return evicted

    def remove(self, session_id: str) -> bool:
        if session_id not in self._sessions:
            return False
        del self._sessions[session_id]
        self.bytes -= self._sizes.pop(session_id)
        return True

    def resize(self, budget: int) -> list[str]:
        self.budget = budget
        return self._shrink_to(budget)

    def ids(self) -> list[str]:
        """Least recently used first."""
        return list(self._sessions)

    def size_of(self, session_id: str) -> int:
        return self._sizes[session_id]

    def _shrink_to(self, limit: int) -> list[str]:
        evicted = []
        while self.bytes > limit and self._sessions:
            session_id, _ = self._sessions.popitem(last=False)
            self.bytes -= self._sizes.pop(session_id)
            self.evictions += 1
            evicted.append(session_id)
        return evicted
