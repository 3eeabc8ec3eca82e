"""The semantic cache as the pipeline uses it: a peer of the exact response
cache, not a part of it.

    pipeline: exact miss -> `find` -> an earlier answer to a prompt asking the same, or None
              stored answer -> `index` (before its reply goes out)
    cache:    evicted, deleted, cleared, switched -> `forget` / `clear` (CacheWatcher)
              another daemon indexed a key -> `indexed`

The tier itself (tier.py) imports numpy and loads an embedder, so it is built
on first use: when a request asks for it, or at start-up and on a reload that
turns it on. Until then this object answers nothing and costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.abc
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..config import SemanticCacheConfig

if TYPE_CHECKING:
    from .embed import RemoteEmbed
    from .tier import AnswerLookup, SemanticTier, VectorStore

__all__ = ["SemanticCache"]

log = structlog.get_logger("claifd.semantic")


class SemanticCache:
    """Given where vectors are kept and how an index entry's answer is read
    (both the exact cache's), and how the openai embedder reaches its API."""

    def __init__(self, config: SemanticCacheConfig, vectors: VectorStore, answers: AnswerLookup,
                 remote: RemoteEmbed | None = None) -> None:
        self.config = config
        self.vectors = vectors
        self.answers = answers
        self.remote = remote
        self.tier: SemanticTier | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<SemanticCache enabled={self.on} tier={'built' if self.tier is not None else 'not built'}>"

    @property
    def on(self) -> bool:
        """On for every request, or for some namespaces (a request can still ask for it alone)."""
        return bool(self.config.enabled or self.config.namespaces)

    @property
    def error(self) -> str | None:
        """Why the tier answers nothing (its embedder cannot load), for health."""
        return self.tier.error if self.tier is not None else None

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        if self.on:
            await (await self.load()).ready()

    async def load(self) -> SemanticTier:
        """The tier, built on first use (its embedder and stored vectors load at its first `ready()`)."""
        if self.tier is None:
            from .tier import SemanticTier  # imports numpy: only when wanted

            self.tier = SemanticTier(self.config, self.vectors, self.answers, self.remote, self._task_group)
        return self.tier

    def reconfigure(self, config: SemanticCacheConfig) -> None:
        self.config = config
        if self.tier is not None:
            self.tier.reconfigure(config)
        elif self.on and self._task_group is not None:
            self._task_group.start_soon(self._warm)  # turned on: its index loads now, not at first use

    async def _warm(self) -> None:
        await (await self.load()).ready()

    # ------------------------------------------------------------- pipeline

    def wanted(self, request: CompletionRequest, namespace: str) -> bool:
        """On for this request: its own `cache.semantic`, else its namespace in
        `cache.semantic.namespaces`, else `cache.semantic.enabled`."""
        control = request.cache
        if control is not None and control.semantic is not None:
            return control.semantic
        return bool(self.config.enabled) or namespace in self.config.namespaces

    async def find(self, provider: str, model: str, request: CompletionRequest,
                   namespace: str) -> CompletionResponse | None:
        """An earlier answer to a prompt asking the same, in the same scope, or None."""
        tier = await self.load()
        return await tier.lookup(provider, model, request, namespace)

    async def index(self, provider: str, model: str, request: CompletionRequest, namespace: str,
                    key: str) -> None:
        """Make a stored answer findable by meaning (awaited before its reply is delivered)."""
        try:
            tier = await self.load()
            await tier.add(provider, model, request, namespace, key)
        except Exception:
            log.exception("semantic indexing failed; the answer is served and cached exactly")

    # ------------------------------------ what the exact cache tells its watchers

    def forget(self, key: str) -> None:
        if self.tier is not None:
            self.tier.forget(key)

    def clear(self, namespace: str | None) -> None:
        if self.tier is not None:
            self.tier.clear(namespace)

    def indexed(self, key: str) -> None:
        """Another daemon indexed `key` (a shared second tier): fetched into ours."""
        if self.tier is not None and self._task_group is not None:
            self._task_group.start_soon(self.tier.fetch, key)

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        if self.tier is not None:
            return self.tier.stats()
        return {"enabled": bool(self.config.enabled), "indexed": 0, "lookups": 0, "hits": 0}
