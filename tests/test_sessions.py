"""Sessions without a daemon: sizes, the LRU, context trimming, auto models, the store."""

from __future__ import annotations

import collections
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claif_client.protocol import CompletionRequest, Message
from claifd.auto import choose_model
from claifd.config import AutoConfig
from claifd.sessions.context import estimate_tokens, trim, units
from claifd.sessions.lru import SessionLRU
from claifd.sessions.model import Session, SessionMessage, new_session_id, session_size
from claifd.sessions.store import AppendMessages, CreateSession, DeleteSession, SessionStore

# ------------------------------------------------------------------ sizes


def make_session(n_messages: int = 10, text_len: int = 60, blocks: bool = False, meta: bool = False) -> Session:
    def content(j: int) -> Any:
        text = (f"m{j} " * text_len)[:text_len]
        return [{"type": "text", "text": text}] if blocks else text

    return Session(
        id=new_session_id(), title="a session", model="echo/x", created=1.0, updated=1.0, accessed=1.0,
        metadata={"user": "bob", "team": "core"} if meta else None,
        messages=[
            SessionMessage(role="user" if j % 2 == 0 else "assistant", content=content(j), time=1.0, tokens=5,
                           metadata={"k": j} if meta and j % 3 == 0 else None)
            for j in range(n_messages)
        ],
    )


@pytest.mark.parametrize(
    "shape",
    [dict(n_messages=0), dict(n_messages=10), dict(n_messages=10, text_len=2000), dict(n_messages=40, text_len=20),
     dict(n_messages=10, blocks=True), dict(n_messages=10, meta=True)],
)
def test_accounted_size_matches_tracemalloc(shape: dict[str, Any]) -> None:
    """Sessions as the daemon holds them (decoded from the store or the wire)."""
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Session)
    blobs = [enc.encode(make_session(**shape)) for _ in range(500)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = collections.OrderedDict()
    for blob in blobs:
        s = dec.decode(blob)
        held[s.id] = s
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    real = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    accounted = sum(session_size(s) for s in held.values())
    assert 0.75 * real <= accounted <= 1.25 * real, (shape, real, accounted)


# -------------------------------------------------------------------- LRU


def test_lru_order_and_budget() -> None:
    a, b, c = make_session(2), make_session(2), make_session(2)
    lru = SessionLRU(session_size(a) + session_size(b) + session_size(c))
    for s in (a, b, c):
        assert lru.put(s) == []
    lru.get(a.id)
    d = make_session(2)
    assert lru.put(d) == [b.id]
    assert lru.ids() == [c.id, a.id, d.id]
    # A session growing past the room left evicts the others, never itself.
    a.messages.extend(make_session(4).messages)
    evicted = lru.put(a)
    assert a.id in lru and lru.bytes <= lru.budget and evicted
    assert lru.resize(0) and len(lru) == 0 and lru.bytes == 0


def test_a_session_larger_than_the_budget_is_not_kept() -> None:
    big = make_session(50, 2000)
    lru = SessionLRU(10_000)
    assert lru.put(big) == [] and big.id not in lru and lru.bytes == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "grow", "get", "remove", "resize"]), st.integers(0, 20),
                          st.integers(0, 30)), max_size=150),
       st.integers(2_000, 60_000))
def test_property_budget_is_never_exceeded(ops: list[tuple[str, int, int]], budget: int) -> None:
    lru = SessionLRU(budget)
    sessions = {i: make_session(n_messages=i % 5) for i in range(21)}
    for op, i, n in ops:
        s = sessions[i]
        if op == "put":
            lru.put(s)
        elif op == "grow":
            s.messages.append(SessionMessage(role="user", content="x" * (n * 50)))
            if s.id in lru:
                lru.put(s)
        elif op == "get":
            lru.get(s.id)
        elif op == "remove":
            lru.remove(s.id)
        else:
            lru.resize(max(1000, n * 2000))
        assert lru.bytes <= lru.budget
        assert lru.bytes == sum(lru.size_of(k) for k in lru.ids())


# ---------------------------------------------------------------- context


def msg(role: str, content: Any, pinned: bool = False) -> SessionMessage:
    return SessionMessage(role=role, content=content, pinned=pinned)


def test_no_trimming_under_the_limit() -> None:
    messages = [msg("user", "hi"), msg("assistant", "hello")]
    assert trim(messages, "sys", 1000) == (messages, 0)


def test_trim_keeps_system_pinned_first_user_and_recent() -> None:
    messages = [msg("user", "THE TASK " * 10)]
    for i in range(1, 40):
        messages.append(msg("assistant" if i % 2 else "user", f"turn {i} " * 20, pinned=(i == 5)))
    kept, dropped = trim(messages, "system prompt", max_tokens=600, recent=8)
    assert kept[0] is messages[0], "the first user message"
    assert messages[5] in kept, "pinned"
    assert kept[-1] is messages[-1], "the newest"
    recent = [m for m in kept if m is not messages[0] and m is not messages[5]]
    assert recent == messages[-len(recent):] and 1 <= len(recent) <= 8
    assert dropped == len(messages) - len(kept) > 0
    assert sum(estimate_tokens(m) for m in kept) <= 600


def test_trim_never_separates_a_tool_call_from_its_result() -> None:
    call = msg("assistant", [{"type": "tool_use", "id": "t1", "name": "calc", "input": {}}])
    result = msg("user", [{"type": "tool_result", "tool_use_id": "t1", "content": "4" * 400}])
    messages = [msg("user", "first")] + [msg("user", "filler " * 50) for _ in range(10)] + [
        call, result, msg("assistant", "the answer is 4"), msg("user", "thanks"),
    ]
    assert [len(u) for u in units(messages)][-4:] == [1, 2, 1, 1]
    for budget in range(50, 900, 25):
        kept, _ = trim(messages, None, budget, recent=8)
        assert (call in kept) == (result in kept), budget


def test_openai_style_tool_messages_stay_with_their_call() -> None:
    call = msg("assistant", [{"type": "tool_calls", "calls": [{"id": "c1"}]}])
    results = [msg("tool", "r1 " * 100), msg("tool", "r2 " * 100)]
    messages = [msg("user", "q")] + [msg("user", "pad " * 100) for _ in range(5)] + [call, *results, msg("user", "next")]
    assert units(messages)[-2] == [6, 7, 8]
    for budget in range(20, 700, 20):
        kept, _ = trim(messages, None, budget)
        present = [m in kept for m in (call, *results)]
        assert all(present) or not any(present), budget


def test_the_newest_message_is_always_sent() -> None:
    messages = [msg("user", "x" * 4000), msg("assistant", "y" * 4000), msg("user", "z" * 4000)]
    kept, dropped = trim(messages, None, max_tokens=10)
    assert kept[-1] is messages[-1] and messages[0] in kept and dropped == 1


def test_estimator_is_pluggable() -> None:
    messages = [msg("user", "a"), msg("assistant", "b"), msg("user", "c")]
    kept, dropped = trim(messages, None, max_tokens=2, estimator=lambda m: 1, recent=1)
    assert dropped == 1 and kept == [messages[0], messages[2]]


# ------------------------------------------------------------- auto model


def ask(text: str, system: str | None = None) -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)], system=system)


def test_auto_model_rules() -> None:
    rules = AutoConfig()
    assert choose_model(ask("hi"), rules) == (rules.fast, "short")
    assert choose_model(ask("Analyze this short text"), rules) == (rules.capable, "keyword")
    assert choose_model(ask("x" * 9000), rules) == (rules.capable, "long")
    assert choose_model(ask("```\ncode\n```"), rules) == (rules.balanced, "code")
    assert choose_model(ask("tell me about " + "the sea " * 100), rules) == (rules.balanced, "balanced")


# ------------------------------------------------------------------ store


def test_store_round_trip_group_commit_and_list(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.open()
    a, b = make_session(3, meta=True), make_session(0)
    b.metadata = {"team": "other"}
    b.updated = 5.0
    store.apply([CreateSession(a), CreateSession(b)])
    store.apply([AppendMessages(b.id, 0, [msg("user", [{"type": "text", "text": "blocks"}])], updated=9.0)])
    loaded = store.load(a.id)
    assert loaded == a
    assert store.load(b.id).messages[0].content == [{"type": "text", "text": "blocks"}]  # type: ignore[union-attr]
    total, rows = store.list(None, 0, 10)
    assert total == 2 and [r.id for r in rows] == [b.id, a.id] and rows[0].message_count == 1
    total, rows = store.list({"team": "core"}, 0, 10)
    assert total == 1 and rows[0].id == a.id
    with pytest.raises(KeyError):
        store.apply([AppendMessages("missing", 0, [msg("user", "x")], 1.0)])
    assert store.counts() == (2, 4), "a failed batch changes nothing"
    store.apply([DeleteSession(a.id)])
    assert store.load(a.id) is None and store.counts() == (1, 1)
    store.close()
    reopened = SessionStore(tmp_path)
    reopened.open()
    assert reopened.load(b.id) is not None
    assert (tmp_path / "sessions.sqlite3").stat().st_mode & 0o777 == 0o600
