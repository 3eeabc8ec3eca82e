"""The vector index: per scope, a growing float32 matrix searched exactly.

A scope is everything about a request except its last user turn (provider,
resolved model, system prompt, sampling parameters, tools, namespace and the
conversation before that turn, hashed): only prompts of the same scope are
ever compared, so a different model or prior context never matches.

Exact search (one matrix-vector product per lookup) rather than an ANN
library: at the sizes a personal cache reaches it is fast enough (see
bench/bench_semantic.py), exact, and needs no extra package. Memory per
entry: dim x 4 bytes (2 KiB at 512 dimensions) plus the prompt and its
guard features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .guards import Features

__all__ = ["VectorIndex"]


class _Scope:
    __slots__ = ("keys", "prompts", "features", "matrix", "size")

    def __init__(self, dim: int) -> None:
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self.features: list[Features] = []
        self.matrix = np.zeros((8, dim), dtype=np.float32)
        self.size = 0


class VectorIndex:
    """Vectors of one embedder; a scope's matrix takes the dimension of its first vector."""

    def __init__(self) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._where: dict[str, tuple[str, str]] = {}  # key -> (scope, namespace)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def add(self, scope: str, namespace: str, key: str, prompt: str, vector: Any, feats: Features) -> None:
        if key in self._where:
            self.remove(key)
        s = self._scopes.get(scope)
        if s is None:
            s = self._scopes[scope] = _Scope(len(vector))
        if s.size == len(s.matrix):
            grown = np.zeros((len(s.matrix) * 2, s.matrix.shape[1]), dtype=np.float32)
            grown[:s.size] = s.matrix[:s.size]
            s.matrix = grown
        s.matrix[s.size] = vector
        s.keys.append(key)
        s.prompts.append(prompt)
        s.features.append(feats)
        s.size += 1
        self._where[key] = (scope, namespace)

    def remove(self, key: str) -> bool:
        where = self._where.pop(key, None)
        if where is None:
            return False
        s = self._scopes[where[0]]
        i = s.keys.index(key)
        last = s.size - 1
        if i != last:  # the last row takes the removed one's place
            s.matrix[i] = s.matrix[last]
            s.keys[i], s.prompts[i], s.features[i] = s.keys[last], s.prompts[last], s.features[last]
        s.keys.pop()
        s.prompts.pop()
        s.features.pop()
        s.size = last
        if not s.size:
            del self._scopes[where[0]]
        return True

    def clear(self, namespace: str | None = None) -> int:
        keys = [k for k, (_, ns) in self._where.items() if namespace is None or ns == namespace]
        for key in keys:
            self.remove(key)
        return len(keys)

    def search(self, scope: str, vector: Any, k: int = 4) -> list[tuple[float, str, str, Features]]:
        """The `k` most similar prompts of the scope: (cosine, key, prompt, features), best first."""
        s = self._scopes.get(scope)
        if s is None or s.matrix.shape[1] != len(vector):
            return []
        sims = s.matrix[:s.size] @ vector
        if s.size > k:
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
        else:
            top = np.argsort(-sims)
        return [(float(sims[i]), s.keys[i], s.prompts[i], s.features[i]) for i in top]

    def memory_bytes(self) -> int:
        return sum(s.matrix.nbytes for s in self._scopes.values())
