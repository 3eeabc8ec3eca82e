"""Issue 33: provider prompt caching placed for the caller, prices, budgets
that hold, the money shown -- the real daemon against the simulator."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest

from claif_client import BudgetExceeded, Client

from .conftest import DaemonProcess, Sim, sim_env
from .test_cli import claif
from .test_front import Front

CLAUDE = "anthropic/claude-sonnet-4-5"
# ~1,500 tokens by any count (the simulator counts words, the daemon 4 characters a token).
LONG = " ".join(f"rule{i:04d}" for i in range(1500))
SHORT = "You are terse."


def body_of(sim: Sim, index: int = -1) -> dict[str, Any]:
    return [r for r in sim.requests() if r.get("path") == "/v1/messages"][index]["body"]  # type: ignore[index,return-value]


def marks(body: dict[str, Any]) -> list[str]:
    """Where the request carries cache_control: "tools", "system", "messages[i]"."""
    out = []
    if any("cache_control" in t for t in body.get("tools") or []):
        out.append("tools")
    if isinstance(body.get("system"), list) and any("cache_control" in b for b in body["system"]):
        out.append("system")
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list) and any("cache_control" in b for b in m["content"]):
            out.append(f"messages[{i}]")
    return out


@pytest.fixture
def priced(daemon_factory, sim: Sim) -> DaemonProcess:  # type: ignore[no-untyped-def]
    return daemon_factory(env=sim_env(sim))  # type: ignore[no-any-return]


def test_a_breakpoint_is_placed_then_read_and_a_turn_seen_before_gets_one(priced: DaemonProcess, sim: Sim) -> None:
    with Client(priced.socket) as c:
        first = c.complete([{"role": "user", "content": "first question"}], model=CLAUDE, system=LONG)
        assert marks(body_of(sim)) == ["system"]
        assert first.optimized and first.optimized["prompt_cache"]["breakpoints"][0]["at"] == "system"
        assert first.usage.cache_creation_input_tokens == 1500 and first.usage.cache_read_input_tokens == 0
        second = c.complete([{"role": "user", "content": "second question"}], model=CLAUDE, system=LONG)
        assert second.usage.cache_read_input_tokens == 1500 and second.usage.cache_creation_input_tokens == 0
        assert second.usage.input_tokens == 2  # the new words only
        # An agent loop: the turn the last request ended with is a prefix seen before.
        turn = [{"role": "user", "content": "second question"},
                {"role": "assistant", "content": second.text}, {"role": "user", "content": "and a third"}]
        third = c.complete(turn, model=CLAUDE, system=LONG)
        assert marks(body_of(sim)) == ["system", "messages[0]"]
        assert [p["at"] for p in third.optimized["prompt_cache"]["breakpoints"]] == ["system", "messages[0]"]
        assert third.usage.cache_read_input_tokens == 1500  # the system; messages[0] is written now
        assert third.usage.cache_creation_input_tokens == 2
        # A repeat is our own cache's: nothing placed, nothing billed.
        again = c.complete([{"role": "user", "content": "first question"}], model=CLAUDE, system=LONG)
        assert again.cached == "exact" and again.text == first.text
        # Off by configuration.
        c.config_set("optimizer.prompt_cache", False)
        c.complete([{"role": "user", "content": "fourth"}], model=CLAUDE, system=LONG)
        assert marks(body_of(sim)) == []
    assert priced.stop() == 0


def test_the_callers_own_marker_is_kept_and_a_short_prompt_gets_none(priced: DaemonProcess, sim: Sim) -> None:
    own = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    with Client(priced.socket) as c:
        reply = c.complete([{"role": "user", "content": "mine"}, {"role": "assistant", "content": "ok"},
                            {"role": "user", "content": "go"}], model=CLAUDE, system=own)
        body = body_of(sim)
        assert marks(body) == ["system"] and body["system"] == own  # kept as given, nothing added
        assert not (reply.optimized or {}).get("prompt_cache")
        short = c.complete([{"role": "user", "content": "hi"}], model=CLAUDE, system=SHORT)
        assert marks(body_of(sim)) == [] and not (short.optimized or {}).get("prompt_cache")
        # Tools above the minimum are marked on their own, the first time they are seen.
        tools = [{"name": "lookup", "description": LONG, "input_schema": {"type": "object", "properties": {}}}]
        c.complete([{"role": "user", "content": "use it"}], model=CLAUDE, system=SHORT, tools=tools,
                   tool_choice={"type": "none"})
        assert marks(body_of(sim)) == ["tools", "system"]
        # OpenAI-style: no markers, the provider caches long prefixes itself.
        c.complete([{"role": "user", "content": "q1"}], model="openai/gpt-4o", system=LONG)
        r = c.complete([{"role": "user", "content": "q2"}], model="openai/gpt-4o", system=LONG)
        assert r.usage.cache_read_input_tokens == 1500 and r.usage.input_tokens == 1  # (OpenAI counts it in)
    assert priced.stop() == 0


def test_prompt_cache_usage_on_both_wires(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    front = Front(d)
    for q in ("one", "two"):
        m = front.anthropic().messages.create(model=CLAUDE, max_tokens=20, system=LONG,
                                              messages=[{"role": "user", "content": q}])
    assert m.usage.cache_read_input_tokens == 1500 and m.usage.input_tokens == 1
    with front.anthropic().messages.stream(model=CLAUDE, max_tokens=20, system=LONG,
                                           messages=[{"role": "user", "content": "streamed"}]) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 1500 and final.usage.cache_creation_input_tokens == 0
    # An OpenAI SDK's system message to Claude: the same system prompt, read from the cache.
    r = front.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "system", "content": LONG},
                                                                       {"role": "user", "content": "three"}])
    usage = r.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1500 == usage.cache_read_input_tokens  # type: ignore[attr-defined]
    assert usage.prompt_tokens == 1501 and usage.cache_creation_input_tokens == 0  # type: ignore[attr-defined]
    assert d.stop() == 0


def test_a_budget_refuses_then_downgrades_and_a_hit_still_serves(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0",
                                   CLAIF_BUDGETS__DAILY_USD="0.0001"))
    front = Front(d)
    with Client(d.socket) as c:
        first = c.complete([{"role": "user", "content": LONG}], model=CLAUDE)  # ~0.0045 USD: over
        with pytest.raises(BudgetExceeded, match="budgets.daily_usd reached"):
            c.complete([{"role": "user", "content": "one more"}], model=CLAUDE)
        assert c.complete([{"role": "user", "content": LONG}], model=CLAUDE).cached == "exact"  # costs 0: served
        assert c.health()["status"] == "warning"
        spend = next(ch for ch in c.health()["checks"] if ch["name"] == "spend")
        assert "budgets.daily_usd reached" in spend["detail"] and "refusing" in spend["detail"]
    requests = len(sim.requests())
    raw = httpx.post(front.url + "/v1/chat/completions", headers={"authorization": f"Bearer {front.token}"},
                     json={"model": CLAUDE, "messages": [{"role": "user", "content": "via http"}]})
    assert raw.status_code == 429 and raw.headers["x-should-retry"] == "false"
    assert "budgets.daily_usd reached" in raw.json()["error"]["message"]
    assert len(sim.requests()) == requests  # nothing went upstream
    with Client(d.socket) as c:
        c.config_set("budgets.action", "downgrade")
        down = c.complete([{"role": "user", "content": "one more"}], model=CLAUDE)
        assert down.model == "anthropic/claude-haiku-4-5" and first.model == CLAUDE
        assert down.optimized and down.optimized["budget"]["from"] == CLAUDE
        assert down.optimized["budget"]["to"] == "anthropic/claude-haiku-4-5"
        assert body_of(sim)["model"] == "claude-haiku-4-5"
    assert d.stop() == 0


def test_spend_is_kept_across_a_restart_and_counted_once_across_kill_9(priced: DaemonProcess, sim: Sim) -> None:
    with Client(priced.socket) as c:
        for i in range(5):
            c.complete([{"role": "user", "content": f"question {i}"}], model=CLAUDE)
        c.complete([{"role": "user", "content": "question 0"}], model=CLAUDE)  # a hit
        before = c.spend()
    assert before["today"]["calls"] == 5 and before["today"]["cache_hits"] == 1
    assert before["today"]["usd"] > 0 and before["today"]["saved"]["cache_usd"] > 0
    assert before["today"]["by_model"][CLAUDE]["calls"] == 5
    assert priced.stop() == 0
    priced.start()
    with Client(priced.socket) as c:
        after = c.spend()
        assert after["today"]["usd"] == before["today"]["usd"] and after["today"]["calls"] == 5
        assert after["month"]["usd"] == before["month"]["usd"]
        # Acknowledged calls, then kill -9: each counted once.
        for i in range(7):
            if i % 2:
                c.complete([{"role": "user", "content": f"plain {i}"}], model=CLAUDE)
            else:
                with c.stream([{"role": "user", "content": f"streamed {i}"}], model=CLAUDE) as stream:
                    assert "".join(stream).startswith("Simulated reply")
    assert priced.proc is not None
    priced.proc.send_signal(signal.SIGKILL)
    priced.proc.wait()
    priced.start()
    with Client(priced.socket) as c:
        assert c.spend()["today"]["calls"] == 12
    assert priced.stop() == 0


def test_claif_spend_metrics_and_an_unpriced_model(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_PROVIDERS__LOCAL__BASE_URL=sim.url + "/v1",
                                   CLAIF_PROVIDERS__LOCAL__API_KEY="x", CLAIF_BUDGETS__MONTHLY_USD="100"))
    with Client(d.socket) as c:
        c.complete([{"role": "user", "content": "priced"}], model=CLAUDE)
        c.complete([{"role": "user", "content": "priced"}], model=CLAUDE)
        c.complete([{"role": "user", "content": "who knows"}], model="local/mystery-model")
        assert c.status()["spend"]["unpriced"] == ["local/mystery-model"]
        spend = next(ch for ch in c.health()["checks"] if ch["name"] == "spend")
        assert spend["status"] == "warning" and "no price for local/mystery-model" in spend["detail"]
        metrics = c.metrics()
    doc = json.loads(claif("--json", "spend", socket=d.socket).stdout)
    assert doc["today"]["usd"] > 0 and doc["month"]["usd"] == doc["today"]["usd"]
    assert doc["today"]["unpriced_calls"] == 1 and doc["today"]["by_provider"]["local"]["usd"] == 0
    assert doc["budgets"][0]["key"] == "budgets.monthly_usd" and doc["budgets"][0]["state"] == "ok"
    text = claif("spend", socket=d.socket).stdout
    assert "today (" in text and "by model: " in text and "anthropic/claude-sonnet-4-5" in text
    assert "no price for local/mystery-model" in text
    assert 'claif_spend_usd_total{model="claude-sonnet-4-5",provider="anthropic"}' in metrics
    assert 'claif_saved_usd_total{by="cache"}' in metrics and 'claif_saved_usd_total{by="prompt_cache"}' in metrics
    assert d.stop() == 0


def test_budget_scopes_and_a_ledger_that_cannot_be_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In process: each scope's limit covers what it names; a ledger that
    cannot be written is said (status, health) and counting goes on."""
    import sqlite3

    import anyio

    from claif_client.protocol import Usage
    from claifd.cache.prices import PriceTable
    from claifd.config import BudgetsConfig, build_config
    from claifd.spend import Spend

    config = build_config({"budgets": {
        "providers": {"openai": {"daily_usd": 0.001}},
        "models": {"anthropic/claude-opus-*": {"monthly_usd": 0.001}},
        "namespaces": {"team": {"daily_usd": 0.001}},
        "ledger": str(tmp_path / "spend.db"),
    }}).budgets
    assert isinstance(config, BudgetsConfig)

    async def main() -> None:
        spend = Spend(config, PriceTable({}))
        async with anyio.create_task_group() as tg:
            await spend.start(tg)
            million = Usage(input_tokens=1_000_000)
            spend.paid("anthropic", "claude-sonnet-4-5", "default", million)  # $3, no scope covers it
            assert spend.over("anthropic", "claude-sonnet-4-5", "default") is None
            spend.paid("openai", "gpt-4o-mini", "default", million)
            over = spend.over("openai", "gpt-4.1", "default")
            assert over is not None and over[0].key == "budgets.providers.openai.daily_usd"
            assert spend.over("anthropic", "claude-opus-4-1", "default") is None
            spend.paid("anthropic", "claude-opus-4-1", "default", million)
            assert spend.over("anthropic", "claude-opus-4-1-20250805", "default") is not None
            assert spend.over("anthropic", "claude-sonnet-4-5", "team") is None
            spend.paid("anthropic", "claude-haiku-4-5", "team", million)
            over = spend.over("anthropic", "claude-sonnet-4-5", "team")
            assert over is not None and over[0].key == "budgets.namespaces.team.daily_usd"
            assert [b["state"] for b in spend.budgets()] == ["exceeded", "exceeded", "exceeded"]
            # The ledger turns read-only (root ignores file modes: a read-only
            # connection stands in): said, counted in memory, written once it can be.
            writable = spend._db
            spend._db = sqlite3.connect(f"file:{tmp_path / 'spend.db'}?mode=ro", uri=True, check_same_thread=False,
                                        isolation_level=None)
            spend.paid("anthropic", "claude-sonnet-4-5", "default", million)
            assert spend.error and "cannot write the spend ledger" in spend.error
            assert spend.report()["today"]["calls"] == 5
            spend._db.close()
            spend._db = writable
            spend.commit()
            assert spend.error is None
            tg.cancel_scope.cancel()
        spend.close()
        again = Spend(config, PriceTable({}))
        again._open()
        assert again.report()["today"]["calls"] == 5 and again.report()["today"]["usd"] == pytest.approx(3 + 0.15 + 15 + 1 + 3)
        again.close()

    anyio.run(main)
