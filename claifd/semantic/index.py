"""The vector index: per scope, a growing float32 matrix, searched exactly;
a scope past `ANN_MIN` entries also gets an HNSW graph (usearch) that
narrows the search to a few candidates, re-scored exactly.

A scope is everything about a request except its last user turn (provider,
resolved model, system prompt, sampling parameters, tools, namespace and the
conversation before that turn, hashed): only prompts of the same scope are
ever compared, so a different model or prior context never matches.

Why both, by measurement (bench/bench_semantic.py, 512 dimensions, one
scope): exact search is one matrix-vector product, ~0.15 ms at 10k entries
but ~4-5 ms at 100k (it reads 200 MB: memory bandwidth); usearch's HNSW
answers in ~0.1-0.2 ms at 100k, but building it costs ~0.2 ms an entry
(20 s for 100k). So small scopes -- nearly all of a personal cache -- stay
exact (no build, no approximation), and a large one is built once in a
worker thread while exact search goes on serving; entries added or removed
meanwhile are replayed onto the graph when it is done. The graph only
proposes candidates: similarity is always the exact dot product of the
stored float32 rows, so the threshold means the same either way. An
approximate search can miss a neighbour (then: a cache miss), never invent
one. Without usearch installed (the `semantic` extra), every scope is exact.

Memory per entry: dim x 4 bytes (2 KiB at 512 dimensions) plus the prompt
and its guard features; in a scope with a graph, dim x 2 bytes more (half
precision) and ~0.2 KiB of links.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from .guards import Features

__all__ = ["VectorIndex", "ANN_MIN", "ann_available"]

# Entries a scope needs before it gets a graph.
ANN_MIN = 20_000
# Candidates the graph proposes for the exact re-scoring.
ANN_CANDIDATES = 32


def ann_available() -> bool:
    return importlib.util.find_spec("usearch") is not None


class _Scope:
    __slots__ = ("keys", "prompts", "features", "matrix", "size", "ids", "row_of", "next_id", "ann", "building",
                 "replay")

    def __init__(self, dim: int) -> None:
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self.features: list[Features] = []
        self.matrix = np.zeros((8, dim), dtype=np.float32)
        self.size = 0
        # Stable ids (rows move when one is removed): the graph's keys.
        self.ids: list[int] = []
        self.row_of: dict[int, int] = {}
        self.next_id = 0
        self.ann: Any = None
        self.building = False
        # Adds (id) and removes (-1 - id) made while the graph was being built.
        self.replay: list[int] = []


class VectorIndex:
    """Vectors of one embedder; a scope's matrix takes the dimension of its first vector.

    `spawn` runs a blocking function in a worker thread and calls back on
    the event loop (the tier passes one); without it no graph is built."""

    def __init__(self, spawn: Callable[[Callable[[], Any], Callable[[Any], None]], None] | None = None,
                 ann_min: int = ANN_MIN) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._where: dict[str, tuple[str, str]] = {}  # key -> (scope, namespace)
        self._spawn = spawn if spawn is not None and ann_available() else None
        self.ann_min = ann_min

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
        ident = s.next_id
        s.next_id += 1
        s.ids.append(ident)
        s.row_of[ident] = s.size
        s.size += 1
        self._where[key] = (scope, namespace)
        if s.ann is not None:
            s.ann.add(ident, s.matrix[s.size - 1])
        elif s.building:
            s.replay.append(ident)
        elif self._spawn is not None and s.size >= self.ann_min:
            self._build(s)

    def remove(self, key: str) -> bool:
        where = self._where.pop(key, None)
        if where is None:
            return False
        s = self._scopes[where[0]]
        i = s.keys.index(key)
        ident = s.ids[i]
        last = s.size - 1
        if i != last:  # the last row takes the removed one's place
            s.matrix[i] = s.matrix[last]
            s.keys[i], s.prompts[i], s.features[i] = s.keys[last], s.prompts[last], s.features[last]
            s.ids[i] = s.ids[last]
            s.row_of[s.ids[i]] = i
        for column in (s.keys, s.prompts, s.features, s.ids):
            column.pop()
        del s.row_of[ident]
        s.size = last
        if s.ann is not None:
            s.ann.remove(ident)
        elif s.building:
            s.replay.append(-1 - ident)
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
        if s.ann is not None:
            found = s.ann.search(vector, ANN_CANDIDATES).keys
            rows = np.fromiter((s.row_of[int(i)] for i in found if int(i) in s.row_of), dtype=np.intp)
            sims = s.matrix[rows] @ vector
        else:
            rows = None
            sims = s.matrix[:s.size] @ vector
        if len(sims) > k:
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
        else:
            top = np.argsort(-sims)
        picked = rows[top] if rows is not None else top
        return [(float(sims[j]), s.keys[i], s.prompts[i], s.features[i]) for j, i in zip(top, picked)]

    def memory_bytes(self) -> int:
        total = 0
        for s in self._scopes.values():
            total += s.matrix.nbytes
            if s.ann is not None:
                total += int(s.ann.memory_usage)
        return total

    def graphs(self) -> int:
        """Scopes searched through a graph."""
        return sum(1 for s in self._scopes.values() if s.ann is not None)

    # ------------------------------------------------------------- graphs

    def _build(self, s: _Scope) -> None:
        s.building = True
        s.replay = []
        ids = np.asarray(s.ids, dtype=np.uint64)
        vectors = s.matrix[:s.size].copy()

        def build() -> Any:
            from usearch.index import Index

            ann = Index(ndim=vectors.shape[1], metric="ip", dtype="f16")
            ann.add(ids, vectors, threads=2)
            return ann

        def done(ann: Any) -> None:
            s.building = False
            if ann is None or not s.size:
                return  # the build failed (logged by the spawner), or the scope emptied: exact search goes on
            for op in s.replay:
                if op >= 0 and op in s.row_of:
                    ann.add(op, s.matrix[s.row_of[op]])
                elif op < 0 and (-1 - op) in ann:
                    ann.remove(-1 - op)
            s.replay = []
            s.ann = ann

        assert self._spawn is not None
        self._spawn(build, done)
