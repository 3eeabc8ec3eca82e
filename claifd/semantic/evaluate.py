"""Precision and recall of the semantic tier -- embedder, guards and
verifier together -- on labelled pairs; `make eval-semantic` runs `main`.

The evaluation set (tests/data/semantic_eval.json, written by
tests/data/make_semantic_eval.py) is split *by template family*, never by
row: each embedder's threshold is calibrated on one half (the lowest that
serves no wrong pair there) and precision and recall are reported on the
other half, per category, with the nearest wrong pair's score. A family's
rewordings never sit on both sides, so the report cannot flatter.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from .embed import Embedder, EmbedderUnavailable, make_embedder
from .guards import Features, check
from .verify import Known, Words, corrected, typo_fixes, verify

__all__ = ["load_pairs", "score_pairs", "precision_recall", "split", "calibrate", "main"]

EVAL_SET = Path(__file__).resolve().parents[2] / "tests" / "data" / "semantic_eval.json"


def load_pairs(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


def passes(new: str, cached: str, known: Known | None = None) -> bool:
    """Do the guards pass and the verifier align `new` with `cached`?"""
    return check(Features(new), Features(cached)) is None and verify(Words(new), Words(cached), known) is None


def score_pairs(embedder: Embedder, pairs: list[dict[str, Any]]) -> list[tuple[float, bool, bool]]:
    """Per pair: (cosine similarity, guards and verifier pass, labelled same).
    `b` is the new prompt, `a` the one in the cache; a prompt with typos the
    verifier aligned is compared with them corrected, as the tier does."""
    known = embedder.known
    news = []
    for p in pairs:
        fixes = typo_fixes(Words(p["b"]), Words(p["a"]), known)
        news.append(corrected(p["b"], fixes) if fixes else p["b"])
    a = embedder.embed([p["a"] for p in pairs])
    b = embedder.embed(news)
    sims = (a * b).sum(axis=1)
    return [(float(sims[i]), passes(p["b"], p["a"], known), bool(p["same"])) for i, p in enumerate(pairs)]


def precision_recall(scored: list[tuple[float, bool, bool]], threshold: float) -> tuple[float, float, int]:
    """(precision, recall, wrong answers served) when serving at `threshold`."""
    served = [same for sim, ok, same in scored if ok and sim >= threshold]
    right = sum(served)
    positives = sum(1 for *_, same in scored if same)
    precision = right / len(served) if served else 1.0
    return precision, (right / positives if positives else 0.0), len(served) - right


def split(pairs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(calibration, held out): each family wholly on one side (by a hash of its name)."""
    calibration = [p for p in pairs if zlib.crc32(p["family"].encode()) % 2 == 0]
    held_out = [p for p in pairs if zlib.crc32(p["family"].encode()) % 2 == 1]
    return calibration, held_out


def calibrate(scored: list[tuple[float, bool, bool]], floor: float = 0.5, keep: float = 0.98) -> float:
    """A threshold from the calibration half: the lowest (to 0.01, at least
    `floor`) above every wrong pair the guards and the verifier let through,
    then raised as far as it keeps `keep` of that recall -- the embedding
    stays a second line of defence behind the verifier, not a formality."""
    wrong = [sim for sim, ok, same in scored if ok and not same]
    threshold = max(floor, math.floor(max(wrong, default=0.0) * 100 + 1) / 100)
    _, recall, _ = precision_recall(scored, threshold)
    while threshold < 0.99 and precision_recall(scored, threshold + 0.01)[1] >= keep * recall:
        threshold = round(threshold + 0.01, 2)
    return threshold


def report(name: str, embedder: Embedder, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    calibration, held_out = split(pairs)
    threshold = calibrate(score_pairs(embedder, calibration))
    scored = score_pairs(embedder, held_out)
    by: dict[str, list[tuple[float, bool, bool]]] = defaultdict(list)
    for pair, row in zip(held_out, scored):
        by[pair["category"]].append(row)
    categories = {}
    for category, rows in sorted(by.items()):
        precision, recall, wrong = precision_recall(rows, threshold)
        same = rows[0][2]
        categories[category] = {"kind": "paraphrase" if same else "near miss", "pairs": len(rows),
                                "served": sum(1 for sim, ok, _ in rows if ok and sim >= threshold),
                                "precision": precision, "recall": recall if same else None, "wrong": wrong,
                                "nearest_wrong": max((sim for sim, _, s in rows if not s), default=None)}
    precision, recall, wrong = precision_recall(scored, threshold)
    nearest = max((sim for sim, ok, same in scored if not same and ok), default=None)
    return {"embedder": name, "threshold": threshold, "calibration_pairs": len(calibration),
            "held_out_pairs": len(held_out), "precision": precision, "recall": recall, "wrong": wrong,
            "nearest_wrong_passing": nearest,
            "nearest_wrong_any": max((sim for sim, _, same in scored if not same), default=None),
            "categories": categories}


def _print(doc: dict[str, Any]) -> None:
    print(f"\n## {doc['embedder']}: threshold {doc['threshold']:.2f} (calibrated on {doc['calibration_pairs']} pairs), "
          f"held out {doc['held_out_pairs']} pairs")
    nearest = doc["nearest_wrong_passing"]
    print(f"precision {doc['precision']:.3f} · recall {doc['recall']:.3f} · wrong answers served {doc['wrong']} · "
          f"nearest wrong pair past the guards and verifier: {'-' if nearest is None else f'{nearest:.3f}'} · "
          f"nearest wrong pair of all: {doc['nearest_wrong_any']:.3f}\n")
    print("| category | kind | pairs | served | precision | recall | nearest wrong |")
    print("|---|---|---|---|---|---|---|")
    for name, c in doc["categories"].items():
        recall = "" if c["recall"] is None else f"{c['recall']:.2f}"
        near = "" if c["nearest_wrong"] is None else f"{c['nearest_wrong']:.3f}"
        print(f"| {name} | {c['kind']} | {c['pairs']} | {c['served']} | {c['precision']:.2f} | {recall} | {near} |")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    pairs = load_pairs(EVAL_SET)
    same = sum(1 for p in pairs if p["same"])
    print(f"# semantic tier evaluation: {len(pairs)} pairs ({same} paraphrases, {len(pairs) - same} near misses), "
          f"{len({p['family'] for p in pairs})} families, split by family")
    docs = []
    for name in args or ["hashed-ngrams", "wordllama"]:
        try:
            embedder = make_embedder(name)
        except EmbedderUnavailable as exc:
            print(f"\n## {name}: not installed ({exc})")
            continue
        docs.append(report(name, embedder, pairs))
        _print(docs[-1])
    if "--json" in args:
        print(json.dumps(docs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
