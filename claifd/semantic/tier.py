"""The semantic tier: on an exact miss, an earlier answer to a prompt that
asks the same thing, in the same scope, or nothing.

    exact miss -> query text (the last user turn) and scope (everything else, hashed)
               -> embed (worker thread) -> nearest prompts of that scope
               -> similarity >= threshold, every guard (guards.py) passes, and the
                  verifier (verify.py) aligns the two prompts word for word
               -> the earlier answer, still in the cache (expired or evicted: dropped
                  from the index, next candidate) -> cached: "semantic" + why

Answers are indexed before their reply is delivered (the completion pipeline
awaits `index`), so a semantic lookup right after finds them. Vectors are
stored with the cache entries on disk (the `vectors` table follows `entries`
through a trigger: expiry, eviction, delete and clear remove them) and
loaded at start-up, so a restart keeps semantic hits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse, SemanticMatch

from ..cache.keys import canonical_bytes
from ..cache.tier import StoredVector, VectorRow
from ..config import SemanticCacheConfig
from .embed import Batcher, Embedder, RemoteEmbed, make_embedder
from .guards import GUARDS, Features, check
from .index import VectorIndex
from .verify import REASONS, Words, corrected, typo_fixes, verify

__all__ = ["AnswerLookup", "SemanticTier", "VectorStore", "query_and_scope"]

class _Entry(Protocol):
    def response(self) -> CompletionResponse: ...


# The stored answer an index entry points at: (key, namespace) -> the entry, or None (expired, evicted).
AnswerLookup = Callable[[str, str], Awaitable[_Entry | None]]


class VectorStore(Protocol):
    """Where the index's vectors are kept between runs and shared between
    daemons (the response cache's second tier, beside its entries)."""

    async def load_vectors(self, identity: str) -> list[StoredVector]: ...

    async def get_vectors(self, identity: str, keys: list[str]) -> list[StoredVector]: ...

    async def keep_vector(self, row: VectorRow) -> None: ...


log = structlog.get_logger("claifd.semantic")

# Candidates checked per lookup, best first.
CANDIDATES = 4
# Below it no candidate is looked at again for typos (a corrected slip rarely scores far under the threshold).
SLIP_FLOOR = 0.5


def query_and_scope(provider: str, model: str, request: CompletionRequest, namespace: str) -> tuple[str, str] | None:
    """(the last user turn's text, the scope hash), or None when the request
    has no plain-text last user turn to compare."""
    if not request.messages:
        return None
    last = request.messages[-1]
    if last.role != "user":
        return None
    if isinstance(last.content, str):
        text = last.content
    else:
        if any(b.get("type") != "text" for b in last.content):
            return None  # images, tool results: never matched by meaning
        text = " ".join(str(b.get("text", "")) for b in last.content)
    if not text.strip():
        return None
    context = msgspec.structs.replace(request, messages=request.messages[:-1])
    scope = hashlib.sha256(b"semantic-scope\0" + canonical_bytes(provider, model, context, namespace)).hexdigest()
    return text, scope


class SemanticTier:
    """Built on first use (service.py); `ready()` loads the embedder (in a
    worker thread) and the stored vectors before the first lookup. An embedder
    that cannot load leaves the tier answering nothing, with `error` saying
    why (status, stats and health show it) until the configuration changes.

    It is given what it needs of the exact cache beside it -- the answers its
    entries point at, and where its vectors are kept -- and holds no
    reference to the cache itself."""

    def __init__(self, config: SemanticCacheConfig, vectors: VectorStore, answers: AnswerLookup,
                 remote: RemoteEmbed | None = None, task_group: anyio.abc.TaskGroup | None = None) -> None:
        self.config = config
        self.vectors = vectors
        self.answers = answers
        self.remote = remote
        self.task_group = task_group
        self.embedder: Embedder | None = None
        self.batcher: Batcher | None = None
        self.index = VectorIndex(self._spawn)
        self.error: str | None = None
        self._loading = anyio.Lock()
        self.lookups = 0
        self.hits = 0
        self.below_threshold = 0
        self.stale = 0
        self.failures = 0
        # Candidates refused by a guard or by the verifier, by reason.
        self.rejected: dict[str, int] = {name: 0 for name, _ in GUARDS} | {reason: 0 for reason in REASONS}

    @property
    def threshold(self) -> float:
        if self.config.threshold:
            return float(self.config.threshold)
        return self.embedder.default_threshold if self.embedder is not None else 1.0

    def reconfigure(self, config: SemanticCacheConfig) -> None:
        if (config.embedder, config.model) != (self.config.embedder, self.config.model):
            # Another embedder: its own vectors are loaded by the next `ready()`.
            self.embedder = self.batcher = None
            self.index = VectorIndex(self._spawn)
            self.error = None
        self.config = config

    async def ready(self) -> Batcher | None:
        """The embedder's batcher once it is loaded and the stored vectors are
        in the index; None when it cannot load."""
        if self.batcher is not None:
            return self.batcher
        async with self._loading:
            if self.batcher is not None or self.error is not None:
                return self.batcher
            config = self.config
            try:
                embedder = await anyio.to_thread.run_sync(make_embedder, config.embedder, config.model, self.remote)
            except Exception as exc:
                self.error = f"the {config.embedder} embedder cannot load: {exc}"
                log.error("semantic tier unavailable", error=self.error)
                return None
            # Loaded before the tier says it is ready: a lookup meanwhile waits for the lock.
            await self.load(await self.vectors.load_vectors(embedder.identity))
            self.embedder, self.batcher = embedder, Batcher(embedder)
            return self.batcher

    def _spawn(self, build: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Build a scope's search graph in a worker thread; `done(graph)` on
        the loop after (None if it failed: exact search goes on)."""
        task_group = self.task_group
        if task_group is None:
            done(None)
            return

        async def run() -> None:
            try:
                graph = await anyio.to_thread.run_sync(build)
            except Exception:
                log.exception("building a semantic index graph failed; that scope stays on exact search")
                graph = None
            done(graph)
            if graph is not None:
                log.info("semantic index graph built", entries=len(graph))

        task_group.start_soon(run)

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("semantic tier: embedding failed; answering from the exact tier only",
                    during=what, error=f"{type(exc).__name__}: {exc}")

    # --------------------------------------------------------------- lookup

    async def lookup(self, provider: str, model: str, request: CompletionRequest,
                     namespace: str) -> CompletionResponse | None:
        found = query_and_scope(provider, model, request, namespace)
        if found is None:
            return None
        text, scope = found
        batcher = await self.ready()
        if batcher is None:
            return None
        self.lookups += 1
        try:
            vector = await batcher.embed(text)
        except Exception as exc:  # a remote endpoint down: a miss, never a failed request
            self._failed("lookup", exc)
            return None
        candidates = self.index.search(scope, vector, CANDIDATES)
        if not candidates:
            return None
        query = Features(text)
        words: Words | None = None
        threshold = self.threshold
        known = batcher.embedder.known
        for similarity, key, prompt, feats in candidates:
            below = similarity < threshold
            if below and similarity < SLIP_FLOOR:
                self.below_threshold += 1
                return None
            failed = check(query, feats)
            if failed is None:  # the guards passed: the verifier aligns the words (verify.py)
                if words is None:
                    words = Words(text)
                cached = Words(prompt)
                failed = verify(words, cached, known)
                if failed is None and below:
                    # Slips ("captial") lower a static embedding's similarity: a prompt the
                    # verifier aligns through typos is compared again, typos corrected.
                    similarity = await self._corrected(batcher, text, prompt, typo_fixes(words, cached, known),
                                                       similarity)
            if below and (failed is not None or similarity < threshold):
                self.below_threshold += 1
                return None
            if failed is not None:
                self.rejected[failed] += 1
                continue
            entry = await self.answers(key, namespace)
            if entry is None:  # expired or evicted since: it leaves the index
                self.stale += 1
                self.index.remove(key)
                continue
            self.hits += 1
            match = SemanticMatch(similarity=round(similarity, 4), prompt=prompt, key=key)
            return msgspec.structs.replace(entry.response(), cached="semantic", semantic=match)
        return None

    async def _corrected(self, batcher: Batcher, text: str, prompt: str, fixes: dict[str, str],
                         similarity: float) -> float:
        """The similarity of `text`, its typos (`fixes`) corrected, to `prompt`
        (`similarity` unchanged when there are none or embedding fails)."""
        if not fixes:
            return similarity
        try:
            fixed = await batcher.embed(corrected(text, fixes))
            theirs = await batcher.embed(prompt)
        except Exception as exc:
            self._failed("lookup", exc)
            return similarity
        return max(similarity, float(fixed @ theirs))

    # ------------------------------------------------------------- indexing

    async def add(self, provider: str, model: str, request: CompletionRequest, namespace: str, key: str) -> None:
        """Index a stored answer (awaited before its reply goes out)."""
        found = query_and_scope(provider, model, request, namespace)
        if found is None:
            return
        text, scope = found
        batcher = await self.ready()
        if batcher is None:
            return
        try:
            vector = await batcher.embed(text)
        except Exception as exc:
            self._failed("indexing", exc)
            return
        if batcher is not self.batcher:
            return  # the embedder changed meanwhile: this vector belongs to no index now
        self.index.add(scope, namespace, key, text, vector, Features(text))
        await self.vectors.keep_vector((key, scope, namespace, text, batcher.embedder.identity, vector.tobytes()))

    async def load(self, rows: list[StoredVector], announce: bool = True) -> None:
        """Vectors stored by an earlier run (key, scope, namespace, prompt, vector) of this embedder.
        Decoding and the guards' features are computed in a worker thread; only
        the index insertions run on the loop."""
        decoded = await anyio.to_thread.run_sync(_decode_rows, rows)
        for key, scope, namespace, prompt, vector, feats in decoded:
            self.index.add(scope, namespace, key, prompt, vector, feats)
        if rows and announce:
            log.info("semantic index loaded", entries=len(self.index))

    async def fetch(self, key: str) -> None:
        """Another daemon indexed `key`: put it in ours."""
        # A tier still loading waits (its load may have read the store before this row was in).
        if await self.ready() is None or self.embedder is None:
            return
        await self.load(await self.vectors.get_vectors(self.embedder.identity, [key]), announce=False)

    def forget(self, key: str) -> None:
        self.index.remove(key)

    def clear(self, namespace: str | None = None) -> None:
        self.index.clear(namespace)

    def stats(self) -> dict[str, Any]:
        batcher = self.batcher
        return {
            "enabled": bool(self.config.enabled),
            "embedder": self.embedder.identity if self.embedder is not None else self.config.embedder,
            "error": self.error,
            "threshold": self.threshold,
            "embed_calls": batcher.calls if batcher is not None else 0,
            "embedded": batcher.texts if batcher is not None else 0,
            "failures": self.failures,
            "indexed": len(self.index),
            "index_bytes": self.index.memory_bytes(),
            "index_graphs": self.index.graphs(),
            "lookups": self.lookups,
            "hits": self.hits,
            "below_threshold": self.below_threshold,
            "stale": self.stale,
            "rejected_by_guard": dict(self.rejected),
        }


def _decode_rows(rows: list[StoredVector]) -> list[tuple[str, str, str, str, Any, Features]]:
    """The rows' vectors and guard features; rows of another dimension than
    the first (another version of the embedder) are left out."""
    import numpy as np

    out = []
    dim = None
    for key, scope, namespace, prompt, blob in rows:
        vector = np.frombuffer(blob, dtype=np.float32)
        dim = dim or len(vector)
        if len(vector) == dim:
            out.append((key, scope, namespace, prompt, vector, Features(prompt)))
    return out
