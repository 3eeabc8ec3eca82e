"""The semantic tier: guards one by one, precision on the labelled set, and
the tier through the real daemon (scope isolation, streams, restart, delete)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from claif_client import BadRequest, Client, NotFound
from claifd.config import ConfigError, build_config
from claifd.semantic.embed import Batcher, EmbedderUnavailable, HashedNgrams, make_embedder
from claifd.semantic.evaluate import load_pairs, precision_recall, score_pairs
from claifd.semantic.guards import Features, check

from .conftest import DaemonProcess, Sim, sim_env
from .test_cache_e2e import wait_disk

PAIRS = Path(__file__).parent / "data" / "semantic_pairs.json"
MODEL = "openai/gpt-4o-mini"


@pytest.mark.parametrize(("a", "b", "guard"), [
    ("What is 2+2?", "What is 2+3?", "numbers"),
    ("What is 6 * 7?", "What is 6 + 7?", "numbers"),
    ("Convert 5 miles to kilometers", "Convert 5 miles to meters", "units"),
    ("What does the file 'a.txt' contain", "What does the file 'b.txt' contain", "quoted"),
    ("What does parse_args do", "What does parse_known_args do", "identifiers"),
    ("Summarize https://example.com/a", "Summarize https://example.com/b", "urls"),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation"),
    ("Convert 100 F to C", "Convert 100 C to F", "entities"),
    ("What is the capital of France?", "What is the capital of Spain?", "entities"),
    ("Is it better to rent or buy a house?", "Is it better to buy or rent a house?", "order"),
    ("Should I buy Tesla stock now", "Should I sell Tesla stock now", "contrast"),
    ("What happened before the war", "What happened after the war", "contrast"),
    ("Define entropy", "Define entropy in thermodynamics and information theory, with examples of each", "length"),
])
def test_each_guard_rejects_its_near_miss(a: str, b: str, guard: str) -> None:
    assert check(Features(b), Features(a)) == guard


@pytest.mark.parametrize(("a", "b"), [
    ("What is the capital of France?", "what is the capital of france"),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("What is 15% of 200?", "what is 15% of 200"),
    ("Fix the error in my_function", "fix the error in my_function please"),
])
def test_guards_pass_genuine_paraphrases(a: str, b: str) -> None:
    assert check(Features(b), Features(a)) is None


def test_default_threshold_has_full_precision_on_the_labelled_set() -> None:
    pairs = load_pairs(PAIRS)
    assert len(pairs) >= 300
    assert {p["kind"] for p in pairs} >= {"paraphrase", "near-miss", "numbers", "entities", "swapped"}
    embedder = HashedNgrams()
    precision, recall, wrong = precision_recall(score_pairs(embedder, pairs), embedder.default_threshold)
    assert wrong == 0 and precision == 1.0
    assert recall >= 1 / 3, recall  # guards that reject everything are not the answer either


def test_embeddings_are_stable_unit_vectors() -> None:
    e = HashedNgrams()
    v = e.embed(["What is the capital of France?", ""])
    assert v.shape == (2, e.dim) and abs(float((v[0] ** 2).sum()) - 1) < 1e-5 and not v[1].any()
    assert (HashedNgrams().embed(["What is the capital of France?"])[0] == v[0]).all()  # CRC-32, not hash()


@pytest.fixture
def semantic_daemon(daemon_factory, sim: Sim):  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__SEMANTIC__ENABLED="true"))
    yield d
    assert d.stop() == 0


def test_paraphrase_is_served_with_why_and_a_near_miss_is_not(semantic_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(semantic_daemon.socket) as c:
        first = c.complete("What is the capital of France?", model=MODEL)
        assert first.cached is False
        hit = c.complete("what is the capital of france", model=MODEL)
        assert hit.cached == "semantic" and hit.text == first.text
        assert hit.semantic is not None and hit.semantic.prompt == "What is the capital of France?"
        assert hit.semantic.similarity >= 0.85 and hit.semantic.key == first.cache_key
        streamed = "".join(c.stream("What is the capital of France", model=MODEL))
        assert streamed == first.text

        c.complete("What is 2+2?", model=MODEL)
        other = c.complete("What is 2+3?", model=MODEL)
        assert other.cached is False and other.text.endswith("2+3?")
        c.complete("Convert 100 F to C", model=MODEL)
        assert c.complete("Convert 100 C to F", model=MODEL).cached is False
        stats = c.cache_stats()["semantic"]
        assert stats["hits"] == 2 and stats["indexed"] >= 4
        assert stats["rejected_by_guard"]["entities"] >= 1 or stats["below_threshold"] >= 1
    assert sim.stats()["requests"] == 5


def test_scope_isolation(semantic_daemon: DaemonProcess) -> None:
    """Another model, system prompt, sampling parameter or prior context never matches."""
    with Client(semantic_daemon.socket) as c:
        c.complete("What is the capital of France?", model=MODEL)
        assert c.complete("what is the capital of france", model="openai/gpt-4o").cached is False
        assert c.complete("what is the capital of france", model=MODEL, system="Answer in verse").cached is False
        assert c.complete("what is the capital of france", model=MODEL, temperature=0.9).cached is False
        prior = [{"role": "user", "content": "Let's talk about Texas."}, {"role": "assistant", "content": "Sure."},
                 {"role": "user", "content": "what is the capital of france"}]
        assert c.complete(prior, model=MODEL).cached is False
        assert c.complete("what is the capital of france", model=MODEL, cache={"namespace": "other"}).cached is False
        assert c.complete("what is the capital of france", model=MODEL).cached == "semantic"


def test_per_request_switch_and_only_mode(upstream_daemon: DaemonProcess) -> None:
    """Off by default; on for one request with cache={"semantic": True}."""
    with Client(upstream_daemon.socket) as c:
        c.complete("How do I reverse a list in Python?", model=MODEL, cache={"semantic": True})
        assert c.complete("How can I reverse a list in Python?", model=MODEL).cached is False
        hit = c.complete("how do i reverse a list in python", model=MODEL, cache={"mode": "only", "semantic": True})
        assert hit.cached == "semantic"
        with pytest.raises(NotFound):
            c.complete("how do i reverse a string in python", model=MODEL, cache={"mode": "only", "semantic": True})


def test_restart_keeps_semantic_hits_and_delete_removes_them(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__SEMANTIC__ENABLED="true"))
    with Client(d.socket) as c:
        kept = c.complete("Explain how photosynthesis works", model=MODEL)
        gone = c.complete("Why is the sky blue?", model=MODEL)
        wait_disk(c, 2)
    assert d.stop() == 0
    d.start()
    with Client(d.socket) as c:
        assert c.cache_stats()["semantic"]["indexed"] == 2
        hit = c.complete("Please explain how photosynthesis works", model=MODEL)
        assert hit.cached == "semantic" and hit.text == kept.text
        assert gone.cache_key is not None and c.cache_delete(gone.cache_key)
        assert c.complete("why is the sky blue", model=MODEL).cached is False
    assert d.stop() == 0


# ----------------------------------------------------------- other embedders


def test_wordllama_has_full_precision_at_its_default_threshold() -> None:
    """The `semantic` extra (make test installs it): weights from its own wheel, nothing downloaded."""
    embedder = make_embedder("wordllama")
    v = embedder.embed(["What is the capital of France?", "what is the capital of france"])
    assert v.shape == (2, embedder.dim) and abs(float((v[0] ** 2).sum()) - 1) < 1e-4
    precision, recall, wrong = precision_recall(score_pairs(embedder, load_pairs(PAIRS)), embedder.default_threshold)
    assert wrong == 0 and precision == 1.0 and recall >= 1 / 3, recall


def test_an_embedder_that_cannot_load_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wordllama" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the wordllama package: pip install 'claifd\[semantic\]'"):
        build_config({"cache": {"semantic": {"embedder": "wordllama"}}})
    with pytest.raises(EmbedderUnavailable, match="wordllama package"):
        make_embedder("wordllama")
    with pytest.raises(ConfigError, match="needs cache.semantic.model"):
        build_config({"cache": {"semantic": {"embedder": "openai", "model": ""}}})


def test_a_tier_whose_embedder_fails_to_load_says_so_and_answers_nothing() -> None:
    import anyio
    import msgspec

    from claif_client.protocol import CompletionRequest, Message
    from claifd.cache.service import ResponseCache
    from claifd.config import CacheConfig, SemanticCacheConfig
    from claifd.semantic.tier import SemanticTier

    broken = msgspec.structs.replace(SemanticCacheConfig(enabled=True), embedder="no-such-embedder")
    cache = ResponseCache(CacheConfig(dir=""), {})
    tier = SemanticTier(broken, cache, lambda key, namespace: cache.lookup(key, namespace=namespace))
    request = CompletionRequest(messages=[Message(role="user", content="hi")])
    assert anyio.run(tier.lookup, "openai", "m", request, "default") is None
    assert tier.error is not None and "no-such-embedder" in tier.error
    assert tier.stats()["error"] == tier.error
    tier.reconfigure(SemanticCacheConfig(enabled=True))  # a good embedder again: the error clears
    assert tier.error is None and anyio.run(tier.ready) is not None


def test_concurrent_prompts_share_one_embedder_call() -> None:
    import anyio

    class Counting(HashedNgrams):
        batches: list[int] = []

        def embed(self, texts: list[str]):  # type: ignore[no-untyped-def]
            self.batches.append(len(texts))
            time.sleep(0.02)
            return super().embed(texts)

    batcher = Batcher(Counting())
    texts = [f"question number {i}" for i in range(20)]
    got: dict[int, object] = {}

    async def main() -> None:
        async def one(i: int) -> None:
            got[i] = await batcher.embed(texts[i])

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)

    anyio.run(main)
    assert sum(Counting.batches) == 20 and len(Counting.batches) <= 3, Counting.batches  # 1, then the rest together
    for i in range(20):
        assert (got[i] == HashedNgrams().embed([texts[i]])[0]).all()  # each caller gets its own row


def test_openai_embedder_through_the_pool_and_an_endpoint_failure_is_a_miss(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__SEMANTIC__ENABLED="true",
                                   CLAIF_CACHE__SEMANTIC__EMBEDDER="openai"))
    with Client(d.socket) as c:
        first = c.complete("What is the capital of France?", model=MODEL)
        hit = c.complete("what is the capital of france", model=MODEL)
        assert hit.cached == "semantic" and hit.text == first.text
        assert sim.stats()["embeddings"] >= 2
        stats = c.cache_stats()["semantic"]
        assert stats["embedder"] == "openai:text-embedding-3-small" and stats["error"] is None
        sim.configure(embeddings_status=500)
        missed = c.complete("What is the capital of the France?", model=MODEL)
        assert missed.cached is False and missed.text.endswith("France?")
        assert c.cache_stats()["semantic"]["failures"] >= 1
        with pytest.raises(BadRequest, match="needs cache.semantic.model"):
            c.config_set("cache.semantic.model", "")
    assert d.stop() == 0


def test_a_large_scope_gets_a_graph_that_agrees_with_exact_search() -> None:
    """Past ann_min entries a scope is searched through an HNSW graph (built
    in a worker thread in the daemon; here by hand), with adds and removes
    made during the build replayed; similarities stay the exact ones."""
    from claifd.semantic.index import VectorIndex

    embedder = HashedNgrams()
    prompts = [f"how do I {verb} a {thing} in {lang}" for verb in ("sort", "reverse", "copy", "split", "join")
               for thing in ("list", "string", "dict", "file", "tuple", "array") for lang in ("python", "rust", "go")]
    vectors = embedder.embed(prompts)
    pending: list[tuple[object, object]] = []
    graph = VectorIndex(lambda build, done: pending.append((build, done)), ann_min=40)
    exact = VectorIndex()
    for i, p in enumerate(prompts[:60]):
        for index in (graph, exact):
            index.add("s", "default", f"k{i}", p, vectors[i], Features(p))
    assert len(pending) == 1 and graph.graphs() == 0  # building: exact search meanwhile
    for i in range(60, len(prompts)):  # added while building
        for index in (graph, exact):
            index.add("s", "default", f"k{i}", prompts[i], vectors[i], Features(prompts[i]))
    for i in range(0, 30, 3):  # removed while building
        assert graph.remove(f"k{i}") and exact.remove(f"k{i}")
    build, done = pending[0]
    done(build())  # type: ignore[operator]
    assert graph.graphs() == 1 and graph.memory_bytes() > exact.memory_bytes()
    graph.add("s", "default", "late", "how do I zip two lists in python", embedder.embed(["x"])[0], Features("x"))
    graph.remove("late")
    queries = embedder.embed([p + " please" for p in prompts])
    for q in queries:
        assert graph.search("s", q, 1)[0][:2] == exact.search("s", q, 1)[0][:2]


def test_expiry_and_eviction_take_vectors_out_of_the_index(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__SEMANTIC__ENABLED="true", CLAIF_CACHE__MAX_SIZE="3000"))
    with Client(d.socket) as c:
        c.complete("Explain how a rainbow forms", model=MODEL, cache={"ttl": 0.3})
        time.sleep(0.5)
        assert c.complete("Please explain how a rainbow forms", model=MODEL).cached is False
        assert c.cache_stats()["semantic"]["stale"] == 1  # found expired: dropped, never served
        for i in range(40):  # past the 3000-byte disk tier: the oldest answers are evicted
            c.complete(f"fill the cache with entry number {i} " + "pad " * 20, model=MODEL)
        stats = wait_disk(c, 1)
        assert stats["disk"]["evictions"] > 0
        # Evicted answers left the index with their entries (the newest ones stay findable).
        assert stats["semantic"]["indexed"] == stats["disk"]["entries"] < 41
        newest = c.complete("Fill the cache with entry number 39 " + "pad " * 20, model=MODEL)
        assert newest.cached == "semantic"
    assert d.stop() == 0
    d.start()
    with Client(d.socket) as c:
        stats = c.cache_stats()
        assert stats["semantic"]["indexed"] == stats["disk"]["entries"]
    assert d.stop() == 0


def test_on_per_namespace(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim))
    with Client(d.socket) as c:
        c.config_set("cache.semantic.namespaces", ["team"])
        for namespace in ("team", "default"):
            c.complete("What is the capital of France?", model=MODEL, cache={"namespace": namespace})
        hit = c.complete("what is the capital of france", model=MODEL, cache={"namespace": "team"})
        assert hit.cached == "semantic"
        assert c.complete("what is the capital of france", model=MODEL).cached is False
    assert d.stop() == 0


def test_the_semantic_cache_is_a_peer_of_the_exact_cache() -> None:
    """Neither imports the other's service: the exact cache tells its watchers
    what went, and the semantic cache is given what it reads and keeps."""
    import ast

    def imports(path: Path) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    root = Path(__file__).parent.parent / "claifd"
    for path in (root / "cache").glob("*.py"):
        assert not any("semantic" in name for name in imports(path)), path
    for path in (root / "semantic").glob("*.py"):
        assert not any(name.endswith("cache.service") or name.endswith("cache") for name in imports(path)), path
