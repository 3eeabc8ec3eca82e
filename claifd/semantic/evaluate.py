"""Precision and recall of an embedder (with the guards) on labelled pairs:
what `make bench` reports and the tests hold the default thresholds to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .embed import Embedder
from .guards import Features, check

__all__ = ["load_pairs", "score_pairs", "precision_recall"]


def load_pairs(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


def score_pairs(embedder: Embedder, pairs: list[dict[str, Any]]) -> list[tuple[float, bool, bool]]:
    """Per pair: (cosine similarity, guards pass, labelled same). `b` is the
    new prompt, `a` the one in the cache."""
    a = embedder.embed([p["a"] for p in pairs])
    b = embedder.embed([p["b"] for p in pairs])
    sims = (a * b).sum(axis=1)
    return [(float(sims[i]), check(Features(p["b"]), Features(p["a"])) is None, bool(p["same"]))
            for i, p in enumerate(pairs)]


def precision_recall(scored: list[tuple[float, bool, bool]], threshold: float) -> tuple[float, float, int]:
    """(precision, recall, wrong answers served) when serving at `threshold`."""
    served = [same for sim, ok, same in scored if ok and sim >= threshold]
    right = sum(served)
    positives = sum(1 for *_, same in scored if same)
    precision = right / len(served) if served else 1.0
    return precision, (right / positives if positives else 0.0), len(served) - right
