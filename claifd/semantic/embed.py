"""Embedders for the semantic tier: text -> unit vectors (float32 rows).

`hashed-ngrams` is the default: no model, no download, no extra package
beyond numpy. Words, word bigrams and character trigrams of the lowercased
text are hashed (CRC-32: stable across processes, so stored vectors stay
valid after a restart) into 512 signed buckets, weighted, and the vector is
L2-normalised, so a dot product is the cosine similarity. It matches
rewordings that keep most of the words (and typos, through the trigrams);
it does not know synonyms -- the guards, not the embedder, keep answers
correct either way.

Embedding runs in a worker thread (`Embedder.embed` is blocking), batched by
the tier.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

from .guards import FILLER

__all__ = ["Embedder", "HashedNgrams", "make_embedder", "EMBEDDERS"]

_TOKEN = re.compile(r"\w+")
class Embedder:
    name: str
    dim: int
    # The threshold at which this embedder had 100% precision (with the
    # guards) on tests/data/semantic_pairs.json; `cache.semantic.threshold`
    # set to 0 means "this default".
    default_threshold: float

    def embed(self, texts: list[str]) -> Any:
        """A (len(texts), dim) float32 array of unit rows."""
        raise NotImplementedError


class HashedNgrams(Embedder):
    name = "hashed-ngrams"
    dim = 512
    default_threshold = 0.85

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


EMBEDDERS: dict[str, type[Embedder]] = {"hashed-ngrams": HashedNgrams}


def make_embedder(name: str) -> Embedder:
    """The embedder called `name`; ValueError (with the choices) if unknown."""
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ValueError(f"unknown cache.semantic.embedder {name!r} (choices: {', '.join(EMBEDDERS)})") from None
