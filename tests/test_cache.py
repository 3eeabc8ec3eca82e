"""The cache's parts without a daemon: keys, TTL policy, memory and disk tiers."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claif_client.protocol import CacheControl, CompletionRequest, CompletionResponse, Message, Usage
from claifd.cache.disk import FILENAME, DiskStore
from claifd.cache.entry import Codec, DamagedEntry, make_entry
from claifd.cache.keys import cache_key
from claifd.cache.memory import MemoryLRU
from claifd.cache.policy import SMART_TTLS, base_ttl, classify, effective_ttl
from claifd.cache.prices import PriceTable, cost_usd
from claifd.cache.replay import split_for_replay

# ------------------------------------------------------------------- keys

BASE = CompletionRequest(
    messages=[Message(role="user", content="What is 2+2?")],
    model="anthropic/claude-x",
    system="be brief",
    max_tokens=100,
    temperature=0.7,
    top_p=0.9,
    top_k=40,
    stop=["END"],
    tools=[{"name": "calc", "input_schema": {"type": "object"}}],
    tool_choice={"type": "auto"},
    extra={"thinking": {"type": "enabled", "budget_tokens": 1024}},
)


def key_of(request: CompletionRequest, provider: str = "anthropic", model: str = "claude-x", ns: str = "default") -> str:
    return cache_key(provider, model, request, ns)


def with_(**changes: Any) -> CompletionRequest:
    return msgspec.structs.replace(BASE, **changes)


# Every field that can change the answer, with a different value.
OUTPUT_CHANGES = {
    "messages": [Message(role="user", content="What is 2+3?")],
    "system": "be verbose",
    "max_tokens": 101,
    "temperature": 0.8,
    "top_p": 0.5,
    "top_k": 41,
    "stop": ["STOP"],
    "tools": [{"name": "calc2", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "any"},
    "extra": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
}


@pytest.mark.parametrize("field", sorted(OUTPUT_CHANGES))
def test_output_fields_change_the_key(field: str) -> None:
    assert key_of(with_(**{field: OUTPUT_CHANGES[field]})) != key_of(BASE)


def test_provider_model_and_namespace_change_the_key() -> None:
    k = key_of(BASE)
    assert key_of(BASE, provider="openai") != k
    assert key_of(BASE, model="claude-y") != k
    assert key_of(BASE, ns="other") != k


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"trace_id": "abc"}},
        {"timeout": 5.0},
        {"cache": CacheControl(mode="refresh", ttl=10)},
        {"session": "s1"},
        {"model": "an-alias"},  # the key uses the resolved model, passed separately
        {"temperature": 0.701},  # rounded to 2 decimals
    ],
)
def test_fields_that_cannot_change_the_answer_do_not(change: dict[str, Any]) -> None:
    assert key_of(with_(**change)) == key_of(BASE)


def test_numbers_are_canonical() -> None:
    assert key_of(with_(temperature=1)) == key_of(with_(temperature=1.0))
    assert key_of(with_(extra=None)) == key_of(with_(extra={}))
    # Dict key order never matters.
    a = with_(tool_choice={"type": "tool", "name": "calc"})
    b = with_(tool_choice={"name": "calc", "type": "tool"})
    assert key_of(a) == key_of(b)


def test_the_design_documents_bug_is_not_ours() -> None:
    """claif_cla's semantic cache matched "2+2" with "2+3"; exact keys never do."""
    two = with_(messages=[Message(role="user", content="What is 2+2?")])
    three = with_(messages=[Message(role="user", content="What is 2+3?")])
    assert key_of(two) != key_of(three)


def _keyed(field: str, value: Any) -> Any:
    """A field as the key sees it: texts without their outer whitespace."""
    if field == "system" and isinstance(value, str):
        return value.strip()
    if field == "messages":
        return [(m.role, m.content.strip() if isinstance(m.content, str) else m.content) for m in value]
    return value


texts = st.text(max_size=30)
messages = st.lists(st.builds(Message, role=st.sampled_from(["user", "assistant"]), content=texts), min_size=1, max_size=4)
requests = st.builds(
    CompletionRequest,
    messages=messages,
    system=st.none() | texts,
    max_tokens=st.none() | st.integers(1, 10_000),
    temperature=st.none() | st.floats(0, 2, allow_nan=False).map(lambda t: round(t, 2)),
    top_p=st.none() | st.floats(0, 1, allow_nan=False),
    top_k=st.none() | st.integers(1, 500),
    stop=st.none() | st.lists(texts, max_size=3),
    metadata=st.none() | st.dictionaries(texts, texts, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(requests, st.sampled_from(sorted(OUTPUT_CHANGES)), st.data())
def test_property_any_output_change_changes_the_key(request: CompletionRequest, field: str, data: st.DataObject) -> None:
    changed_value = {
        "messages": data.draw(messages),
        "system": data.draw(texts),
        "max_tokens": data.draw(st.integers(1, 10_000)),
        "temperature": data.draw(st.floats(0, 2, allow_nan=False).map(lambda t: round(t, 2))),
        "top_p": data.draw(st.floats(0, 1, allow_nan=False)),
        "top_k": data.draw(st.integers(1, 500)),
        "stop": data.draw(st.lists(texts, min_size=1, max_size=3)),
        "tools": [{"name": data.draw(texts)}],
        "tool_choice": {"type": data.draw(texts)},
        "extra": {"x": data.draw(texts)},
    }[field]
    changed = msgspec.structs.replace(request, **{field: changed_value})
    same_value = _keyed(field, getattr(request, field)) == _keyed(field, changed_value) or (
        field == "extra" and not request.extra and not changed_value
    )
    assert (key_of(changed) == key_of(request)) == same_value


@settings(max_examples=200, deadline=None)
@given(requests, st.dictionaries(texts, texts, max_size=3), st.floats(0.1, 100))
def test_property_metadata_and_timeout_never_change_the_key(
    request: CompletionRequest, metadata: dict[str, str], timeout: float
) -> None:
    # (Streamed or not shares one key too: the stream flag rides on the frame,
    # not in the request; test_cache_e2e replays a plain answer as a stream.)
    changed = msgspec.structs.replace(request, metadata=metadata, timeout=timeout)
    assert key_of(changed) == key_of(request)


# ------------------------------------------------------------------ policy


def req(text: str, **kw: Any) -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)], **kw)


@pytest.mark.parametrize(
    "text,kind",
    [
        ("What is the latest news on the election?", "news"),
        ("What's the weather today?", "news"),
        ("Fix this python function", "code"),
        ("```\nx = 1\n```", "code"),
        ("Write a poem about the sea", "creative"),
        ("Compare the French and German economies", "analysis"),
        ("Summarize this paper", "analysis"),
        ("What is the capital of France?", "factual"),
    ],
)
def test_classify(text: str, kind: str) -> None:
    assert classify(req(text)) == kind


def test_high_temperature_is_creative() -> None:
    assert classify(req("What is the capital of France?", temperature=1.0)) == "creative"


def test_ttl_strategies() -> None:
    r = req("What is the capital of France?")
    assert base_ttl("conservative", r, 3600, 86400 * 30) == 3600
    assert base_ttl("smart", r, 3600, 86400 * 30) == SMART_TTLS["factual"]
    assert base_ttl("smart", req("latest news"), 3600, 86400 * 30) == 900
    assert base_ttl("aggressive", r, 3600, 86400 * 30) == 86400 * 30
    assert base_ttl("smart", r, 3600, 86400) == 86400  # capped by max_ttl
    fixed = req("x", cache=CacheControl(ttl=12))
    assert base_ttl("smart", fixed, 3600, 86400) == 12


def test_smart_ttl_grows_with_hits_up_to_the_cap() -> None:
    assert effective_ttl("smart", 100, 5, 1000) == 100
    assert effective_ttl("smart", 100, 6, 1000) == 150
    assert effective_ttl("smart", 100, 11, 1000) == 200
    assert effective_ttl("smart", 800, 11, 1000) == 1000
    assert effective_ttl("conservative", 100, 50, 1000) == 100
    assert effective_ttl("smart", 100, 50, 1000, fixed=True) == 100


# -------------------------------------------------------------- memory tier

RESP = CompletionResponse(text="four", model="anthropic/claude-x", usage=Usage(input_tokens=10, output_tokens=2))


def entry(key: str, now: float = 0.0, ttl: float = 100.0, text: str = "four", ns: str = "default",
          chunks: list[str] | None = None) -> Any:
    return make_entry(key, ns, msgspec.structs.replace(RESP, text=text), chunks, now, ttl, False)


def test_lru_order_and_expiry_with_a_fake_clock() -> None:
    e1, e2, e3 = entry("a"), entry("b"), entry("c")
    lru = MemoryLRU(e1.size + e2.size + e3.size)
    for e in (e1, e2, e3):
        lru.put(e)
    assert lru.get("a", now=1) is e1  # a becomes most recent
    evicted = lru.put(entry("d"))
    assert [e.key for e in evicted] == ["b"]
    assert lru.get("c", now=99.9) is not None
    assert lru.get("c", now=100.0) is None, "expired exactly at created + ttl"
    assert "c" not in lru and lru.expirations == 1


def test_lru_budget_and_oversized_entries() -> None:
    big = entry("big", text="x" * 10_000)
    lru = MemoryLRU(5_000)
    assert lru.put(big) == [] and "big" not in lru
    assert lru.bytes == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "delete", "resize"]), st.integers(0, 30), st.integers(0, 3000)),
                max_size=200), st.integers(1000, 20_000))
def test_property_memory_budget_is_never_exceeded(ops: list[tuple[str, int, int]], budget: int) -> None:
    lru = MemoryLRU(budget)
    model: dict[str, int] = {}
    for op, k, n in ops:
        key = f"k{k}"
        if op == "put":
            lru.put(entry(key, text="y" * n))
        elif op == "get":
            lru.get(key, now=0)
        elif op == "delete":
            lru.delete(key)
        else:
            lru.resize(max(1000, n * 5))
        assert lru.bytes <= lru.max_bytes
        assert lru.bytes == sum(e.size for e in lru.entries())
    del model


def test_clear_by_namespace_and_resize() -> None:
    lru = MemoryLRU(10**6)
    lru.put(entry("a", ns="x"))
    lru.put(entry("b", ns="y"))
    assert lru.clear("x") == 1 and "b" in lru
    lru.put(entry("c"))
    evicted = lru.resize(lru.bytes - 1)
    assert [e.key for e in evicted] == ["b"]


def test_entry_charge_is_honest() -> None:
    """The bytes charged per entry cover what it really holds (tracemalloc)."""
    import tracemalloc

    text = "z" * 2000
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    entries = [entry(f"key{i:060d}", text=text, chunks=split_for_replay(text)) for i in range(200)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    real = sum(s.size_diff for s in after.compare_to(before, "filename"))
    charged = sum(e.size for e in entries)
    assert 0.75 * real <= charged <= 1.5 * real, (real, charged)


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_codec_round_trip_and_damage(compression: str) -> None:
    codec = Codec(compression)
    e = entry("k", chunks=["fo", "ur"])
    blob, crc = codec.encode(e)
    payload = codec.decode(blob, crc)
    assert payload.response.text == "four" and payload.chunks == ["fo", "ur"]
    damaged = blob[:-3] + b"\x00\x01\x02"
    with pytest.raises(DamagedEntry):
        codec.decode(damaged, crc)
    with pytest.raises(DamagedEntry):
        codec.decode(b"q" + blob[1:], __import__("zlib").crc32(b"q" + blob[1:]))


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError):
        Codec("lz77")


# --------------------------------------------------------------- disk tier


def test_disk_round_trip_restart_and_expiry(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    store.put_many([entry("a", now=0, ttl=100, chunks=["fo", "ur"]), entry("b", now=0, ttl=10)], now=0)
    store.close()
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    assert store.entries == 2
    hit = store.get("a", now=50)
    assert hit is not None and hit.payload.chunks == ["fo", "ur"] and hit.payload.response.cached == "exact"
    assert hit.hits == 1  # the count to write back; the row itself is written by touch_many
    assert store.get("b", now=10) is None, "expired"
    assert store.entries == 1
    assert (tmp_path / FILENAME).stat().st_mode & 0o777 == 0o600


def test_disk_size_cap_is_never_exceeded(tmp_path: Path) -> None:
    codec = Codec("none")
    one = len(codec.encode(entry("x", text="w" * 1000))[0])
    store = DiskStore(tmp_path, one * 5 + 10, codec)
    store.open()
    rng = random.Random(1)
    for i in range(40):
        store.put_many([entry(f"k{i}", now=i, text="w" * rng.randint(900, 1000))], now=float(i))
        assert store.bytes <= store.max_bytes
        assert store.bytes == store.db.execute("SELECT SUM(size) FROM entries").fetchone()[0]
    assert store.evictions > 0
    # The most recently written survive.
    assert store.get("k39", now=40) is not None and store.get("k0", now=40) is None
    store.resize(one)
    assert store.bytes <= one and store.entries <= 1


def test_damaged_row_is_dropped_not_served(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    store.put_many([entry("a"), entry("b")], now=0)
    store.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("UPDATE entries SET blob = X'7a00112233' WHERE key = 'a'")
    db.commit()
    db.close()
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    assert store.get("a", now=1) is None
    assert store.damaged == 1 and store.entries == 1
    assert store.db.execute("SELECT COUNT(*) FROM entries WHERE key = 'a'").fetchone()[0] == 0
    assert store.get("b", now=1) is not None


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is not sqlite" * 100)
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    store.put_many([entry("a")], now=0)
    assert store.get("a", now=1) is not None
    assert list(tmp_path.glob(f"{FILENAME}.damaged-*"))


def test_clear_namespace_and_touch(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    store.put_many([entry("a", ns="x"), entry("b", ns="y")], now=0)
    store.touch_many([("b", 7, 500.0, 3.0)])
    assert store.clear("x") == 1 and store.entries == 1
    hit = store.get("b", now=200)
    assert hit is not None and hit.hits == 8, "touch carried the memory tier's hits"


# ------------------------------------------------------------------ prices


def test_prices() -> None:
    assert cost_usd("anthropic/claude-sonnet-4-5", 1_000_000, 0, {}) == 3.0
    assert cost_usd("anthropic/claude-sonnet-4-5-20250929", 0, 1_000_000, {}) == 15.0
    assert cost_usd("echo/x", 1000, 1000, {}) == 0.0
    table = PriceTable({"echo/x": {"input": 1.0, "output": 2.0}})
    assert table.cost("echo/x", 1_000_000, 1_000_000) == 3.0


def test_replay_split_concatenates_back() -> None:
    for text in ["", "one", "a  b\nc ", "  lead"]:
        assert "".join(split_for_replay(text)) == text


def test_a_cancelled_flight_is_never_joined() -> None:
    # The last subscriber left and cancelled the call, but its task has not
    # landed the flight yet: a newcomer must start a fresh call, not inherit
    # "the upstream call was cancelled".
    import anyio

    from claifd.cache.service import ResponseCache
    from claifd.config import CacheConfig

    async def main() -> None:
        cache = ResponseCache(CacheConfig(dir=""))
        first, leader = cache.flights.join("k", streaming=False)
        assert leader
        again, leader = cache.flights.join("k", streaming=False)
        assert again is first and not leader
        first.scope.cancel()
        fresh, leader = cache.flights.join("k", streaming=False)
        assert leader and fresh is not first
        cache.flights.land(first)  # the old flight landing late leaves the new one in place
        assert cache.flights["k"] is fresh

    anyio.run(main)


def test_one_unstorable_entry_does_not_cost_the_batch(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 10**6, Codec())
    store.open()
    bad = entry("nan", ttl=float("nan"))  # NaN is stored as NULL: NOT NULL fails
    good = [entry(f"k{i}") for i in range(20)]
    assert store.put_many([*good[:10], bad, *good[10:]], now=0) == 20
    assert store.entries == 20 and store.get("nan", now=1) is None
    assert all(store.get(f"k{i}", now=1) is not None for i in range(20))
