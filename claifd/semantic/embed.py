"""Embedders for the semantic tier: text -> unit vectors (float32 rows).

`hashed-ngrams` is the default: no model, no download, no extra package
beyond numpy. Words, word bigrams and character trigrams of the lowercased
text are hashed (CRC-32: stable across processes, so stored vectors stay
valid after a restart) into 512 signed buckets, weighted, and the vector is
L2-normalised, so a dot product is the cosine similarity. It matches
rewordings that keep most of the words (and typos, through the trigrams);
it does not know synonyms -- the guards, not the embedder, keep answers
correct either way.

`wordllama` (the `semantic` extra) is a static-embedding model whose weights
ship in its wheel: loaded from its own package directory, never downloaded.
`openai` asks an OpenAI-compatible `/v1/embeddings` endpoint (the openai
provider's base URL and key) through the daemon's pool.

Local embedders run in a worker thread (`Embedder.embed` is blocking); the
tier batches concurrent prompts into one call (`Batcher`).
"""

from __future__ import annotations

import importlib.util
import re
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np

from .guards import FILLER

__all__ = ["Embedder", "HashedNgrams", "WordLlamaEmbedder", "RemoteEmbedder", "EmbedderUnavailable",
           "make_embedder", "EMBEDDERS", "Batcher", "RemoteEmbed"]

# (model, texts) -> one vector per text, through the daemon's pool.
RemoteEmbed = Callable[[str, list[str]], Awaitable[list[list[float]]]]


class EmbedderUnavailable(Exception):
    """The configured embedder cannot load; the message says what to install or set."""

_TOKEN = re.compile(r"\w+")
class Embedder:
    name: str
    dim: int
    # Calibrated by `make eval-semantic` (claifd/semantic/evaluate.py) on the
    # calibration half of tests/data/semantic_eval.json, with the guards and
    # the verifier; `cache.semantic.threshold` set to 0 means "this default".
    default_threshold: float

    # Is a (lowercase) word in the embedder's vocabulary? None: it has none
    # (the verifier then cannot tell a typo from another word by it).
    known: Callable[[str], bool] | None = None

    def embed(self, texts: list[str]) -> Any:
        """A (len(texts), dim) float32 array of unit rows (blocking)."""
        raise NotImplementedError

    async def embed_async(self, texts: list[str]) -> Any:
        return await anyio.to_thread.run_sync(self.embed, texts)

    @property
    def identity(self) -> str:
        """What stored vectors are tagged with: vectors of another identity are not loaded."""
        return self.name


class HashedNgrams(Embedder):
    name = "hashed-ngrams"
    dim = 512
    default_threshold = 0.62

    def embed(self, texts: list[str]) -> Any:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            vec = out[row]
            words = _TOKEN.findall(text.lower())
            for i, word in enumerate(words):
                self._add(vec, "w:" + word, 0.4 if word in FILLER else 1.0)
                if i:
                    self._add(vec, "b:" + words[i - 1] + " " + word, 0.7)
                padded = f" {word} "
                for j in range(len(padded) - 2):
                    self._add(vec, "c:" + padded[j:j + 3], 0.25 if word in FILLER else 0.5)
            norm = float(np.linalg.norm(vec))
            if norm:
                vec /= norm
        return out

    def _add(self, vec: Any, feature: str, weight: float) -> None:
        h = zlib.crc32(feature.encode())
        vec[h % self.dim] += weight if h & 0x80000000 else -weight


class WordLlamaEmbedder(Embedder):
    """wordllama's 256-dimension static embeddings (~20 us a prompt here)."""

    name = "wordllama"
    dim = 256
    default_threshold = 0.78

    def __init__(self) -> None:
        if importlib.util.find_spec("wordllama") is None:
            raise EmbedderUnavailable("cache.semantic.embedder 'wordllama' needs the wordllama package: "
                                      "pip install 'claifd[semantic]'")
        import wordllama  # type: ignore[import-untyped]

        try:  # its weights are in its own package directory: nothing is downloaded
            self._model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, dim=self.dim,
                                                   disable_download=True)
        except Exception as exc:
            raise EmbedderUnavailable(f"wordllama could not load its bundled model: {exc}") from exc

        self._tokenizer = self._model.tokenizer
        self._known: dict[str, bool] = {}
        self.known = self._is_known

    def _is_known(self, word: str) -> bool:
        """A word its tokenizer has whole (one token): "county" is, "captial" is not."""
        found = self._known.get(word)
        if found is None:
            if len(self._known) > 100_000:
                self._known.clear()
            found = self._known[word] = len(self._tokenizer.encode(word, add_special_tokens=False).ids) == 1
        return found

    @property
    def identity(self) -> str:
        return "wordllama:lowercase"

    def embed(self, texts: list[str]) -> Any:
        # Lowercased: its vocabulary is cased, so "what is the capital of france"
        # would sit far from "What is the capital of France?" (the guards and the
        # verifier read the prompts as written).
        out = np.asarray(self._model.embed([t.lower() for t in texts], norm=True), dtype=np.float32)
        return out.reshape(len(texts), self.dim)


class RemoteEmbedder(Embedder):
    """An OpenAI-compatible `/v1/embeddings` endpoint (`cache.semantic.model`).
    Its dimension is learnt from the first answer."""

    name = "openai"
    dim = 0
    # Not calibrated here (no endpoint on this machine); the guards carry
    # precision. Measure with bench/bench_semantic.py against your endpoint.
    default_threshold = 0.90

    def __init__(self, model: str, remote: RemoteEmbed | None) -> None:
        if remote is None:
            raise EmbedderUnavailable("cache.semantic.embedder 'openai' needs the openai provider")
        self.model = model
        self._remote = remote

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    def embed(self, texts: list[str]) -> Any:
        raise TypeError("a remote embedder is asynchronous: use embed_async")

    async def embed_async(self, texts: list[str]) -> Any:
        rows = await self._remote(self.model, texts)
        out = np.asarray(rows, dtype=np.float32)
        if out.ndim != 2 or len(out) != len(texts) or not out.shape[1]:
            raise ValueError(f"the embeddings endpoint answered {out.shape} for {len(texts)} texts")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


EMBEDDERS: dict[str, type[Embedder]] = {"hashed-ngrams": HashedNgrams, "wordllama": WordLlamaEmbedder,
                                        "openai": RemoteEmbedder}


def make_embedder(name: str, model: str = "", remote: RemoteEmbed | None = None) -> Embedder:
    """The embedder called `name` (blocking: a model may load from disk).
    EmbedderUnavailable when it cannot load, ValueError when unknown."""
    if name == "openai":
        return RemoteEmbedder(model, remote)
    if name == "auto":  # the best one installed
        try:
            return WordLlamaEmbedder()
        except EmbedderUnavailable:
            return HashedNgrams()
    try:
        cls = EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown cache.semantic.embedder {name!r} (choices: auto, {', '.join(EMBEDDERS)})") from None
    return cls()


class _Batch:
    __slots__ = ("texts", "vectors", "error", "done")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.vectors: Any = None
        self.error: BaseException | None = None
        self.done = anyio.Event()


class Batcher:
    """Concurrent prompts share one embedder call: while one batch is being
    embedded, the prompts that arrive wait together for the next one.
    Alone, a prompt is embedded at once (no added wait)."""

    def __init__(self, embedder: Embedder, max_batch: int = 256) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._open: _Batch | None = None
        self._running = anyio.Lock()
        self.calls = 0
        self.texts = 0

    async def embed(self, text: str) -> Any:
        batch = self._open
        leader = batch is None or len(batch.texts) >= self.max_batch
        if leader:
            batch = self._open = _Batch()
        assert batch is not None
        index = len(batch.texts)
        batch.texts.append(text)
        if leader:
            # Shielded: followers wait on this batch, so a leader cancelled
            # meanwhile still embeds it for them.
            with anyio.CancelScope(shield=True):
                async with self._running:
                    if self._open is batch:
                        self._open = None
                    self.calls += 1
                    self.texts += len(batch.texts)
                    try:
                        batch.vectors = await self.embedder.embed_async(batch.texts)
                    except Exception as exc:
                        batch.error = exc
                    batch.done.set()
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.vectors[index]
