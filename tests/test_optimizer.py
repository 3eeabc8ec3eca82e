"""The request optimizer: model "auto" by complexity_hint and by code, a
max_tokens default by complexity, context trimmed to the model's window;
every change visible in the reply's `optimized`, each switchable."""

from __future__ import annotations

import json

import pytest

from claif_client import BadRequest, Client
from claif_client.protocol import CompletionRequest, Message
from claifd.auto import choose_model, looks_like_code
from claifd.config import AutoConfig, Config, OptimizerConfig
from claifd.optimizer import context_window, optimize

from .conftest import DaemonProcess, Sim
from .test_cli import claif

TIERS = {"fast": "openai/fast-model", "balanced": "openai/mid-model", "capable": "openai/big-model"}


@pytest.mark.parametrize("text", [
    "why does `x.sort()` return None?",
    "fix this:\ndef f(a):\n    return a+",
    "what does const x = await fetch(url); do",
    "SELECT name FROM users WHERE id = 3",
    "for (int i = 0; i < n; i++) {",
    "is a => b the same as function(a) { return b }",
    "the <div class='x'> does not show",
    "$ ls -la | grep foo",
])
def test_code_in_any_form_is_detected(text: str) -> None:
    assert looks_like_code(text)


@pytest.mark.parametrize("text", [
    "What is the capital of France?",
    "Tell me a story about a dragon, a knight and a princess. Make it short: three sentences.",
    "I'd like to know: is 5 > 3? And what's 2 + 2 = ?",
    "Summarize the plot of Hamlet (the play by Shakespeare) in two lines.",
])
def test_prose_is_not_code(text: str) -> None:
    assert not looks_like_code(text)


def ask(text: str, hint: str | None = None, **fields: object) -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)],
                             complexity_hint=hint, **fields)  # type: ignore[arg-type]


def test_auto_model_by_hint_and_by_code() -> None:
    rules = AutoConfig()
    assert choose_model(ask("Analyze this", "simple"), rules) == (rules.fast, "complexity_hint=simple")
    assert choose_model(ask("hi", "moderate"), rules) == (rules.balanced, "complexity_hint=moderate")
    assert choose_model(ask("hi", "complex"), rules) == (rules.capable, "complexity_hint=complex")
    assert choose_model(ask("why is `len(x)` 0"), rules) == (rules.balanced, "code")
    assert choose_model(ask("why is the sky blue"), rules) == (rules.fast, "short")


def test_max_tokens_by_complexity_only_when_unset_and_switchable() -> None:
    config = Config()
    seen: dict[str, object] = {}
    out = optimize(ask("hi", "simple"), "openai", "m", config, seen)
    assert out.max_tokens == 1024 and seen == {"max_tokens": {"value": 1024, "rule": "complexity_hint=simple"}}
    seen = {}
    assert optimize(ask("hi", "simple", max_tokens=7), "openai", "m", config, seen).max_tokens == 7 and not seen
    assert optimize(ask("hi"), "openai", "m", config, seen).max_tokens is None and not seen
    off = Config(optimizer=OptimizerConfig(enabled=False))
    assert optimize(ask("hi", "complex"), "openai", "m", off, seen).max_tokens is None and not seen


def test_context_window_is_the_longest_matching_pattern() -> None:
    rules = OptimizerConfig()
    assert context_window(rules, "anthropic", "claude-sonnet-4-5") == 200_000
    assert context_window(rules, "openai", "gpt-4.1-mini") == 1_047_576
    assert context_window(rules, "openai", "gpt-4o") == 128_000
    assert context_window(OptimizerConfig(context_windows={}), "openai", "gpt-4o") == 0


def long_conversation() -> list[dict[str, object]]:
    """25 turns of ~250 tokens, a tool call with its result in the middle, a short question last."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "The task: keep notes. " + "a" * 1000}]
    for i in range(1, 24):
        role = "assistant" if i % 2 else "user"
        messages.append({"role": role, "content": f"turn {i} " + "b" * 1000})
    messages[20] = {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x" * 400}}]}
    messages[21] = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "y" * 400}]}
    messages.append({"role": "user", "content": "and now?"})
    return messages


@pytest.fixture
def tiered(upstream_daemon: DaemonProcess) -> DaemonProcess:
    with Client(upstream_daemon.socket) as c:
        c.config_set("auto", TIERS)
        c.config_set("optimizer.context_windows", {"openai/*": 5000})
    return upstream_daemon


def test_optimizations_are_visible_in_the_reply_and_reach_upstream(tiered: DaemonProcess, sim: Sim) -> None:
    with Client(tiered.socket) as c:
        r = c.complete("Why is the sky blue?", model="auto", complexity_hint="complex")
        assert r.model == "openai/big-model"
        assert r.optimized == {"model": {"chosen": "openai/big-model", "rule": "complexity_hint=complex"},
                               "max_tokens": {"value": 16384, "rule": "complexity_hint=complex"}}
        body = sim.requests()[-1]["body"]
        assert body["model"] == "big-model" and body["max_tokens"] == 16384  # type: ignore[index]

        # The same request again: a cache hit, still reporting what was done to it.
        again = c.complete("Why is the sky blue?", model="auto", complexity_hint="complex")
        assert again.cached == "exact" and again.optimized == r.optimized
        streamed = c.stream("Why is the sky blue?", model="auto", complexity_hint="complex")
        assert "".join(streamed) == r.text and streamed.response is not None
        assert streamed.response.optimized == r.optimized

        # Another max_tokens is another question: the same prompt without a hint is not served that answer.
        plain = c.complete("Why is the sky blue?", model="openai/big-model")
        assert plain.cached is False and plain.optimized is None

        with pytest.raises(BadRequest, match="complexity_hint"):
            c.complete("hi", complexity_hint="hard")


def test_long_context_is_trimmed_to_the_window_keeping_tool_pairs(tiered: DaemonProcess, sim: Sim) -> None:
    messages = long_conversation()
    with Client(tiered.socket) as c:
        r = c.complete(messages, model="openai/gpt-4o-mini", max_tokens=500)
        ctx = r.optimized["context"]  # type: ignore[index]
        assert ctx["window"] == 5000 and ctx["reserved_for_answer"] == 500
        assert ctx["estimated_tokens_before"] > 5000 >= ctx["estimated_tokens_after"] + 500
        sent = sim.requests()[-1]["body"]["messages"]  # type: ignore[index]
        assert len(sent) == ctx["kept_messages"] == len(messages) - ctx["dropped_messages"]
        assert sent[0]["content"].startswith("The task")  # the first user message states the task
        assert sent[-1]["content"] == "and now?"
        # A tool call and its result (sent in OpenAI's shape) travel together or not at all.
        assert any("tool_calls" in m for m in sent) == any(m["role"] == "tool" for m in sent)
        turns = [int(m["content"].split()[1]) for m in sent if str(m.get("content")).startswith("turn ")]
        assert turns == sorted(turns) and turns

        c.config_set("optimizer.trim_context", False)
        untouched = c.complete(messages, model="openai/gpt-4o-mini", max_tokens=500)
        assert untouched.optimized is None and len(sim.requests()[-1]["body"]["messages"]) == len(messages)  # type: ignore[index]


def test_optimizer_off_and_per_hint_switches(tiered: DaemonProcess, sim: Sim) -> None:
    with Client(tiered.socket) as c:
        c.config_set("optimizer.max_tokens.simple", 0)
        r = c.complete("hello there", model="openai/gpt-4o-mini", complexity_hint="simple")
        assert r.optimized is None and "max_tokens" not in sim.requests()[-1]["body"]  # type: ignore[operator]
        c.config_set("optimizer.enabled", False)
        r = c.complete(long_conversation(), model="openai/gpt-4o-mini", complexity_hint="complex")
        assert r.optimized is None
        # An "auto" model is still chosen, and says so.
        assert c.complete("hi", model="auto").optimized == {"model": {"chosen": "openai/fast-model", "rule": "short"}}


def test_cli_complexity_flag(tiered: DaemonProcess) -> None:
    out = claif("--json", "ask", "--model", "auto", "--complexity", "simple", "hi", socket=tiered.socket)
    doc = json.loads(out.stdout)
    assert doc["model"] == "openai/fast-model"
    assert doc["optimized"]["max_tokens"] == {"value": 1024, "rule": "complexity_hint=simple"}
