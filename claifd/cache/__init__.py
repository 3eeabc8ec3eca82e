"""The response cache: exact keys, a memory tier in front of a disk tier,
TTL strategies and single-flight. See docs/CACHING.md."""

from __future__ import annotations

from .entry import MemEntry
from .keys import DEFAULT_NAMESPACE, cache_key
from .replay import split_for_replay
from .service import ResponseCache

__all__ = ["ResponseCache", "MemEntry", "cache_key", "DEFAULT_NAMESPACE", "split_for_replay"]
