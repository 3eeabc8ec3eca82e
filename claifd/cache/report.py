"""What the response cache reports: `claif cache stats` (every counter, per
tier) and the `status.cache` block of the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tier import DiskTier

if TYPE_CHECKING:
    from .service import ResponseCache

__all__ = ["stats", "status"]


def stats(cache: ResponseCache) -> dict[str, Any]:
    lookups = cache.hits + cache.misses
    tier = cache.tier
    return {
        "enabled": cache.config.enabled,
        "strategy": cache.config.strategy,
        "hits": cache.hits,
        "hits_memory": cache.hits_memory,
        "hits_disk": cache.hits_disk,
        "misses": cache.misses,
        "hit_rate": round(cache.hits / lookups, 4) if lookups else 0.0,
        "coalesced": cache.flights.coalesced,
        "stores": cache.stores,
        "not_stored": dict(cache.not_stored),
        "in_flight": len(cache.flights),
        "memory": {
            "entries": len(cache.memory), "bytes": cache.memory.bytes, "max_bytes": cache.memory.max_bytes,
            "evictions": cache.memory.evictions, "expired": cache.memory.expirations,
        },
        "disk": {**tier.stats(), "errors": cache.disk_errors} if isinstance(tier, DiskTier) else None,
        "backend": cache.backend,
        "shared": tier.stats() if tier.shared else None,
        "saved": {
            "input_tokens": cache.saved_input_tokens,
            "output_tokens": cache.saved_output_tokens,
            "cost_usd": round(cache.saved_cost_usd, 6),
        },
    }


def status(cache: ResponseCache) -> dict[str, Any]:
    """The contract's `status.cache` block, and the disk tier's state."""
    disk = cache.tier if isinstance(cache.tier, DiskTier) else None
    if not cache.config.enabled:
        state = "disabled"
    elif disk is None:
        state = "unavailable" if cache.config.dir else "memory-only"
    else:
        state = "ok"
    entries, size = disk.entries_and_bytes() if disk is not None else (0, 0)
    return {
        "hits": cache.hits,
        "misses": cache.misses,
        "coalesced": cache.flights.coalesced,
        # Answers stored a moment ago are in memory before the write-behind
        # reaches the disk: never report fewer than memory holds.
        "entries": max(entries, len(cache.memory)),
        "bytes": cache.memory.bytes + size,
        "disk_tier": state,
        "disk_errors": cache.disk_errors,
        # The last disk failure while it lasts (None once writes work again).
        "disk_error": cache.disk_error,
        "quarantined": disk.quarantined() if disk is not None else [],
    }
