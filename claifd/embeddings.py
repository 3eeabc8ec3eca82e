"""Embeddings (`POST /v1/embeddings`, OpenAI's shape) for any provider that
serves them (type openai or azure): each input is cached exactly, so the same
text is never paid for twice, and the inputs not cached are batched: one
request's misses, and those of requests that arrive together for the same
model (within `WINDOW`), go upstream as one call (at most `MAX_INPUTS` texts), and a text
already on its way is waited for, not asked again.

An embedding is kept in the response cache (memory, then disk or Redis) as
an entry of its own: one block {"type": "embedding", "embedding": [...]},
under a key of the model, the dimensions and the text. A vector of a model
does not change, so it is kept for `cache.max_ttl`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import msgspec

from claif_client.protocol import CacheControl, CompletionRequest, CompletionResponse, Message, Usage

from .cache import ResponseCache
from .config import Config
from .errors import BadRequest, ClaifdError, UpstreamError, error_info
from .perf import Perf
from .providers import OpenAIProvider, Providers
from .spend import Spend

__all__ = ["Embeddings", "MAX_INPUTS"]

# OpenAI's limit of inputs in one embeddings request.
MAX_INPUTS = 2048
# Texts for the same model asked within this many seconds share one upstream call.
WINDOW = 0.005


class _Pending:
    """A text on its way upstream: its vector or its error, when done."""

    __slots__ = ("key", "text", "done", "vector", "tokens", "error")

    def __init__(self, key: str, text: str) -> None:
        self.key = key
        self.text = text
        self.done = anyio.Event()
        self.vector: list[float] | None = None
        self.tokens = 0
        self.error: BaseException | None = None


class Embeddings:
    def __init__(self, cache: ResponseCache, providers: Providers, config: Callable[[], Config], perf: Perf,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.cache = cache
        self.providers = providers
        self.config = config
        self.perf = perf
        self.spawn = spawn
        # Texts on their way, by key (a second asker waits for the first).
        self._flying: dict[str, _Pending] = {}
        # Texts waiting for the next upstream call, by (provider, model, dimensions).
        self._queued: dict[tuple[str, str, int | None], list[_Pending]] = {}
        self.upstream_calls = 0
        # What calls cost (the app sets it): each call is in the ledger before its askers are answered.
        self.spend: Spend | None = None

    def __repr__(self) -> str:
        return f"<Embeddings flying={len(self._flying)} upstream_calls={self.upstream_calls}>"

    async def create(self, doc: Any, front: str = "openai") -> tuple[dict[str, Any], int]:
        """OpenAI's embeddings answer for the request `doc`, and how many of
        its inputs the cache answered."""
        started = time.perf_counter()
        texts, model_name, encoding, dimensions = _read(doc)
        config = self.config()
        name, model = self.providers.resolve(model_name, config.client.model, config.models)
        provider = self.providers.get(name)
        if not isinstance(provider, OpenAIProvider):
            kind = type(provider).__name__ if provider is not None else "unknown"
            raise BadRequest(f"model: {name}/{model} routes to {name} ({kind}), which serves no embeddings; "
                             f"use a provider of type openai or azure")
        namespace = config.cache.namespace
        keys = [_key(namespace, name, model, dimensions, text) for text in texts]
        vectors: list[list[float] | None] = [None] * len(texts)
        cached = 0
        paid = 0
        waiting: list[tuple[int, _Pending]] = []
        try:
            for i, key in enumerate(keys):
                entry = await self.cache.lookup(key) if config.cache.enabled else None
                if entry is not None:
                    vectors[i] = _vector_of(entry.response())
                    cached += 1
                    continue
                pending = self._flying.get(key)
                if pending is None:
                    pending = self._flying[key] = _Pending(key, texts[i])
                    queue = self._queued.setdefault((name, model, dimensions), [])
                    queue.append(pending)
                    if len(queue) == 1:
                        self.spawn(self._flush(provider, name, model, dimensions))
                    paid += 1
                waiting.append((i, pending))
            for i, pending in waiting:
                await pending.done.wait()
                if pending.error is not None:
                    raise pending.error
                vectors[i] = pending.vector
        except BaseException as exc:
            code = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else error_info(exc).code
            self.perf.request("embeddings", name, model, code, time.perf_counter() - started, front)
            raise
        outcome = "cached-exact" if cached == len(texts) else "ok"
        self.perf.request("embeddings", name, model, outcome, time.perf_counter() - started, front)
        tokens = sum(p.tokens for _, p in waiting)
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                for i, v in enumerate(vectors) if v is not None]
        return {"object": "list", "data": data, "model": model_name or f"{name}/{model}",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, cached

    async def _flush(self, provider: OpenAIProvider, name: str, model: str, dimensions: int | None) -> None:
        """The texts queued for this model, in calls of at most MAX_INPUTS
        (those that arrive while this one waits its turn ride along)."""
        await anyio.sleep(WINDOW)  # requests that arrive together join this call
        queue = self._queued.pop((name, model, dimensions), [])
        for start in range(0, len(queue), MAX_INPUTS):
            batch = queue[start:start + MAX_INPUTS]
            await self._call(provider, name, model, dimensions, batch)

    async def _call(self, provider: OpenAIProvider, name: str, model: str, dimensions: int | None,
                    batch: list[_Pending]) -> None:
        started = time.perf_counter()
        self.upstream_calls += 1
        try:
            vectors, tokens = await provider.embed_retried(model, [p.text for p in batch], dimensions)
        except BaseException as exc:  # every asker gets the error (a cancellation goes on up)
            self.perf.upstream_call(name, model, time.perf_counter() - started, False)
            error = exc if isinstance(exc, ClaifdError) else UpstreamError(
                f"embeddings from {name} failed: {type(exc).__name__}")
            for pending in batch:
                pending.error = error
            if not isinstance(exc, Exception):
                raise
        else:
            self.perf.upstream_call(name, model, time.perf_counter() - started, True, tokens, 0)
            total = sum(len(p.text) for p in batch) or 1
            config = self.config()
            for pending, vector in zip(batch, vectors):
                pending.vector = vector
                pending.tokens = round(tokens * len(pending.text) / total)
                if config.cache.enabled:
                    self.cache.store(pending.key, config.cache.namespace, _kept(config, pending.text),
                                     CompletionResponse(id="", model=f"{name}/{model}", text="",
                                                        content=[{"type": "embedding", "embedding": vector}],
                                                        usage=Usage(input_tokens=pending.tokens)), None)
            if self.spend is not None:
                self.spend.paid(name, model, config.cache.namespace, Usage(input_tokens=tokens))
        finally:
            for pending in batch:
                self._flying.pop(pending.key, None)
                pending.done.set()


def _read(doc: Any) -> tuple[list[str], str | None, str, int | None]:
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    raw = doc.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise BadRequest("input: a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(f"input[{i}]: a string (token ids are not taken: send the text)")
        if not text:
            raise BadRequest(f"input[{i}]: an empty string has no embedding")
    if len(texts) > MAX_INPUTS:
        raise BadRequest(f"input: at most {MAX_INPUTS} items, not {len(texts)}")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model: a string")
    encoding = doc.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(f"encoding_format: float or base64, not {encoding!r}")
    dimensions = doc.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                   or not 1 <= dimensions <= 65536):
        raise BadRequest("dimensions: an integer from 1 to 65536")
    return texts, model, encoding, dimensions


def _key(namespace: str, provider: str, model: str, dimensions: int | None, text: str) -> str:
    material = msgspec.json.encode(["embedding", 1, namespace, provider, model, dimensions, text])
    return hashlib.sha256(material).hexdigest()


def _kept(config: Config, text: str) -> CompletionRequest:
    """What the cache is told of a stored embedding (its TTL: a model's vector does not change)."""
    return CompletionRequest(messages=[Message(role="user", content=text)],
                             cache=CacheControl(ttl=float(config.cache.max_ttl)))


def _vector_of(response: CompletionResponse) -> list[float]:
    for block in response.content:
        if block.get("type") == "embedding":
            return list(block["embedding"])
    raise UpstreamError("a cached embedding entry holds no vector")


def _encode(vector: list[float], encoding: str) -> Any:
    if encoding == "base64":  # float32, little-endian, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector

