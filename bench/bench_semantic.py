"""The semantic tier (claifd/semantic/), all in one run:

1. precision and recall with the guards, per threshold, on the labelled set
   (tests/data/semantic_pairs.json), for each embedder;
2. embedding time per prompt per embedder;
3. index lookup (search + guards on the candidates, embedding excluded) at
   10k and 100k entries in one scope, exact and through the search graph
   (with its build time and how often it finds the right neighbour); target
   p50 <= 1 ms at 100k;
4. a semantic hit end to end over the socket, as a ratio to an exact hit in
   the same run.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import msgspec
from _common import ROOT, daemon, print_table, start_sim, time_calls

from claif_client import Client
from claifd.semantic.embed import Embedder, EmbedderUnavailable, HashedNgrams, make_embedder
from claifd.semantic.evaluate import load_pairs, precision_recall, score_pairs
from claifd.semantic.guards import Features, check
from claifd.semantic.index import VectorIndex
from claifd.semantic.verify import Words, verify

PAIRS = Path(ROOT) / "tests" / "data" / "semantic_pairs.json"
WORDS = ("alpha beta gamma delta python list sort reverse capital city river mountain recipe poem story "
         "explain describe compare history science music planet ocean forest engine database server").split()


def local_embedders() -> dict[str, Embedder]:
    """The embedders that run on this machine (the openai one needs an endpoint)."""
    found: dict[str, Embedder] = {}
    for name in ("hashed-ngrams", "wordllama"):
        try:
            found[name] = make_embedder(name)
        except EmbedderUnavailable as exc:
            print(f"{name}: skipped ({exc})")
    return found


def quality() -> list[dict[str, object]]:
    pairs = load_pairs(PAIRS)
    rows = []
    for name, embedder in local_embedders().items():
        scored = score_pairs(embedder, pairs)
        for t in (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            p, r, wrong = precision_recall(scored, t)
            rows.append({"embedder": name, "threshold": t, "precision": p, "recall": r, "wrong_served": wrong,
                         "default": "yes" if t == embedder.default_threshold else ""})
    return rows


def embedding_time() -> list[dict[str, object]]:
    pairs = load_pairs(PAIRS)
    texts = [p["a"] for p in pairs]
    rows = []
    for name, e in local_embedders().items():
        one = time_calls(lambda: e.embed([texts[0]]), 2000, warmup=100)
        t0 = time.perf_counter()
        for _ in range(5):
            e.embed(texts)
        batch = (time.perf_counter() - t0) / (5 * len(texts))
        rows.append({"embedder": name, "one_prompt_p50_us": statistics.median(one) * 1e6,
                     "per_prompt_in_batch_us": batch * 1e6})
    return rows


def lookup(n: int, graph: bool) -> dict[str, object]:
    e = HashedNgrams()
    rng = random.Random(n)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(8)) + f" {i}" for i in range(n)]
    built: list[float] = []

    def build_now(build, done) -> None:  # type: ignore[no-untyped-def]  # the daemon uses a worker thread
        t0 = time.perf_counter()
        done(build())
        built.append(time.perf_counter() - t0)

    index = VectorIndex(build_now, ann_min=n) if graph else VectorIndex()
    vectors = e.embed(prompts)
    for i, p in enumerate(prompts):
        index.add("scope", "default", f"k{i}", p, vectors[i], Features(p))
    targets = [rng.randrange(n) for _ in range(200)]
    queries = e.embed([prompts[t] + " please" for t in targets])
    query_features = Features("alpha beta gamma please 1")
    found = sum(1 for t, q in zip(targets, queries) if index.search("scope", q, 1)[0][1] == f"k{t}")

    def one(i: list[int] = [0]) -> None:  # noqa: B006 - a counter
        q = queries[i[0] % len(queries)]
        i[0] += 1
        words = Words("alpha beta gamma please 1")
        for _sim, _key, prompt, feats in index.search("scope", q, 4):
            check(query_features, feats)
            verify(words, Words(prompt))  # (the daemon verifies only candidates the guards passed)

    samples = time_calls(one, 300, warmup=20)
    return {"entries": n, "search": "graph (usearch HNSW) + exact re-score" if graph else "exact (numpy)",
            "p50_ms": statistics.median(samples) * 1e3, "p99_ms": sorted(samples)[296] * 1e3,
            "found_the_rewording": f"{found}/200", "graph_build_s": built[0] if built else 0.0,
            "index_mib": index.memory_bytes() / 2**20, "target": "p50 <= 1 ms at 100k"}


def end_to_end() -> list[dict[str, object]]:
    proc, url = start_sim(fast=True)
    env = {"CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1", "OPENAI_API_KEY": "sk-bench",
           "CLAIF_CACHE__SEMANTIC__ENABLED": "true"}
    try:
        with daemon(env) as sock, Client(sock) as c:
            c.complete("What is the capital of France?", model="openai/gpt-4o-mini")
            assert c.complete("what is the capital of france", model="openai/gpt-4o-mini").cached == "semantic"
            exact, semantic = [], []
            for _ in range(10):  # interleaved
                exact += time_calls(lambda: c.complete("What is the capital of France?", model="openai/gpt-4o-mini"),
                                    200, warmup=20)
                semantic += time_calls(lambda: c.complete("what is the capital of france",
                                                          model="openai/gpt-4o-mini"), 200, warmup=20)
    finally:
        proc.terminate()
        proc.wait()
    base = statistics.median(exact)
    return [{"name": "exact hit (memory tier)", "p50_us": base * 1e6, "ratio": 1.0},
            {"name": "semantic hit (hashed-ngrams)", "p50_us": statistics.median(semantic) * 1e6,
             "ratio": statistics.median(semantic) / base}]


def main() -> None:
    q = quality()
    print_table("precision / recall with the guards on the labelled set", q)
    emb = embedding_time()
    print_table("embedding time", emb)
    lk = [lookup(10_000, False), lookup(100_000, False), lookup(10_000, True), lookup(100_000, True)]
    print_table("index lookup, embedding excluded (search + guards + verifier on 4 candidates)", lk)
    e2e = end_to_end()
    print_table("over the socket: a semantic hit vs an exact hit, same run", e2e)
    print(msgspec.json.encode({"bench": "semantic", "quality": q, "embedding": emb, "lookup": lk,
                               "end_to_end": e2e}).decode())


if __name__ == "__main__":
    main()
