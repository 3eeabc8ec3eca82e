"""Whether a request looks for (and leaves) an answer by meaning."""

from __future__ import annotations

from claif_client.protocol import CompletionRequest

from ..config import SemanticCacheConfig

__all__ = ["semantic_wanted"]


def semantic_wanted(request: CompletionRequest, namespace: str, semantic: SemanticCacheConfig) -> bool:
    """On for this request: its own `cache.semantic`, else its namespace in
    `cache.semantic.namespaces`, else `cache.semantic.enabled`."""
    control = request.cache
    if control is not None and control.semantic is not None:
        return control.semantic
    return bool(semantic.enabled) or namespace in semantic.namespaces
