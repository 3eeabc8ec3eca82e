"""The memory tier: an LRU bounded in bytes (sans-IO, no awaits).

`bytes` never exceeds `max_bytes`: a put evicts least-recently-used entries
first, and an entry larger than the whole budget is not kept in memory at
all (it still lives on disk). Expired entries are removed when looked up.
Eviction only drops the memory copy; the disk tier keeps its own.
"""

from __future__ import annotations

from collections import OrderedDict

from .entry import MemEntry

__all__ = ["MemoryLRU"]


class MemoryLRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0
        self._entries: OrderedDict[str, MemEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"<MemoryLRU entries={len(self._entries)} bytes={self.bytes}/{self.max_bytes} evictions={self.evictions}>"

    def get(self, key: str, now: float) -> MemEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(key)
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, entry: MemEntry) -> list[MemEntry]:
        """Insert or replace; returns the entries evicted to make room."""
        if entry.key in self._entries:
            self._remove(entry.key)
        if entry.size > self.max_bytes:
            return []
        evicted = self._shrink_to(self.max_bytes - entry.size)
        self._entries[entry.key] = entry
        self.bytes += entry.size
        return evicted

    def delete(self, key: str) -> bool:
        if key in self._entries:
            self._remove(key)
            return True
        return False

    def clear(self, namespace: str | None = None) -> int:
        if namespace is None:
            count = len(self._entries)
            self._entries.clear()
            self.bytes = 0
            return count
        doomed = [k for k, e in self._entries.items() if e.namespace == namespace]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def resize(self, max_bytes: int) -> list[MemEntry]:
        """A new budget; shrinking evicts at once."""
        self.max_bytes = max_bytes
        return self._shrink_to(max_bytes)

    def entries(self) -> list[MemEntry]:
        return list(self._entries.values())

    def _shrink_to(self, limit: int) -> list[MemEntry]:
        evicted = []
        while self.bytes > limit and self._entries:
            _, entry = self._entries.popitem(last=False)
            self.bytes -= entry.size
            self.evictions += 1
            evicted.append(entry)
        return evicted

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
