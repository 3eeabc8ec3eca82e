"""Every provider side by side (issue 28): two simulators on two ports as two
named OpenAI-compatible providers, plus the Anthropic one. Routing by name
and by bare id, ambiguity, several keys, fallbacks, the circuit breaker, and
nothing served from the cache across models."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from claif_client import BadRequest, CircuitOpen, Client, RateLimited, UpstreamError

from .conftest import DaemonProcess, Sim, eventually, running_sim, sim_env

FALLBACK = "local/llama3.1:8b"


@pytest.fixture(scope="module")
def sim2_process() -> Iterator[Sim]:
    yield from running_sim()


@pytest.fixture
def sim2(sim2_process: Sim) -> Sim:
    """A second upstream: a local server that needs no key (an Ollama)."""
    sim2_process.reset()
    sim2_process.configure(require_key=False)
    return sim2_process


@pytest.fixture
def two(daemon_factory, sim: Sim, sim2: Sim) -> Iterator[DaemonProcess]:  # type: ignore[no-untyped-def]
    """The daemon with `local` (sim2, no key) and `router` (sim under a prefix, a key and a header) added live."""
    d = daemon_factory(env=sim_env(sim, CLAIF_HEALTH__INTERVAL="0.2"))
    with Client(d.socket) as c:
        c.config_set("providers.local.base_url", sim2.url + "/v1")
        c.config_set("providers.local.models", ["llama3.1:8b"])
        c.config_set("providers.router.base_url", sim.url + "/api/v1")
        c.config_set("providers.router.api_key", "sk-router-0000-ROUTER")
        c.config_set("providers.router.headers", {"HTTP-Referer": "https://example.org/app"})
        c.config_set("providers.router.models", ["meta-llama/llama-3-70b"])
    yield d
    assert d.stop() == 0


def _last(sim: Sim) -> dict[str, Any]:
    return sim.requests()[-1]


def test_named_providers_route_by_name_and_by_bare_id(two: DaemonProcess, sim: Sim, sim2: Sim) -> None:
    with Client(two.socket) as c:
        r = c.complete("hi local", model="local/llama3.1:8b")
        assert r.text == "Simulated reply to: hi local" and r.model.startswith("local/")
        sent = _last(sim2)
        assert sent["body"]["model"] == "llama3.1:8b" and sent["key_header"] is None  # no key: none sent
        assert c.complete("hi bare", model="llama3.1:8b").model.startswith("local/")  # its `models` list
        assert sim2.stats()["requests"] == 2 and sim.stats()["requests"] == 0
        r = c.complete("hi router", model="meta-llama/llama-3-70b")  # a bare id with a slash, from a list
        sent = _last(sim)
        assert sent["target"] == "/api/v1/chat/completions" and sent["body"]["model"] == "meta-llama/llama-3-70b"
        assert sent["key_header"] == "authorization" and sent["headers"]["http-referer"] == "https://example.org/app"
        assert c.complete("hi gpt", model="gpt-4o-mini").model.startswith("openai/")  # the public prefixes
        assert _last(sim)["target"] == "/v1/chat/completions"
        assert c.complete("hi claude", model="claude-haiku-4-5").model.startswith("anthropic/")
        # Discovery: an id only GET /models lists resolves once the provider was asked.
        sim2.configure(models=["qwen2.5:7b"])
        with pytest.raises(BadRequest, match="qwen2.5:7b"):
            c.complete("q", model="qwen2.5:7b")
        listed = c.models(refresh=True)["models"]
        assert {"id": "local/llama3.1:8b", "provider": "local", "source": "config"} in listed
        assert {"id": "local/qwen2.5:7b", "provider": "local", "source": "discovered"} in listed
        assert c.complete("q", model="qwen2.5:7b").model.startswith("local/")
        status = c.status()["providers"]
        assert status["local"]["type"] == "openai" and status["local"]["keys"] == []
        [key] = status["router"]["keys"]
        assert key["key"] == "#1 ...UTER" and key["state"] == "ok" and key["uses"] >= 1  # (health's GET /models too)
        assert "sk-router" not in str(c.config_get("providers.router"))
        # Removed live: gone from routing.
        c.config_unset("providers.router.base_url")
        c.config_unset("providers.router.api_key")
        c.config_unset("providers.router.headers")
        c.config_unset("providers.router.models")
        with pytest.raises(BadRequest, match="unknown provider 'router'"):
            c.complete("x", model="router/m")


def test_an_id_two_providers_list_is_refused_with_the_candidates(two: DaemonProcess) -> None:
    with Client(two.socket) as c:
        c.config_set("providers.router.models", ["meta-llama/llama-3-70b", "llama3.1:8b"])
        with pytest.raises(BadRequest) as refused:
            c.complete("x", model="llama3.1:8b")
        assert "local/llama3.1:8b" in refused.value.message and "router/llama3.1:8b" in refused.value.message
        with pytest.raises(BadRequest, match="type must be one of anthropic, openai, azure"):
            c.config_set("providers.other.type", "bedrock")
        with pytest.raises(BadRequest, match="base_url is required"):
            c.config_set("providers.other.type", "azure")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fault", ["429", "529", "500", "timeout", "refused"])
def test_a_failing_model_falls_back_and_is_never_cached_under_it(two: DaemonProcess, sim: Sim, sim2: Sim,
                                                                 fault: str) -> None:
    reason = {"429": "rate_limited", "529": "overloaded", "500": "server_error", "timeout": "timeout",
              "refused": "connection"}[fault]
    with Client(two.socket) as c:
        c.config_set("routing.fallbacks", {"gpt-4o-mini": [FALLBACK]})
        if fault == "timeout":
            c.config_set("providers.openai.timeout", 0.2)
            sim.configure(latency_ms=3000)
        elif fault == "refused":
            c.config_set("providers.openai.base_url", f"http://127.0.0.1:{_closed_port()}/v1")
        else:
            sim.configure(errors=[int(fault)] * 4, retry_after=0)
        started = time.monotonic()
        r = c.complete(f"fall {fault}", model="gpt-4o-mini")
        assert r.text == f"Simulated reply to: fall {fault}" and r.model.startswith("local/")
        assert r.fallback == {"from": "openai/gpt-4o-mini", "to": FALLBACK, "reason": reason}
        assert time.monotonic() - started < 10
        assert sim2.stats()["requests"] == 1
        # Cached under the model that answered, never under the one asked for.
        again = c.complete(f"fall {fault}", model=FALLBACK)
        assert again.cached == "exact" and again.fallback is None
        sim.configure(errors=[], latency_ms=0)
        if fault == "refused":
            c.config_unset("providers.openai.base_url")
            c.config_set("providers.openai.base_url", sim.url + "/v1")
        fresh = c.complete(f"fall {fault}", model="gpt-4o-mini")
        assert fresh.cached is False and fresh.fallback is None and fresh.model.startswith("openai/")
        metrics = c.metrics()
        assert f'claif_fallbacks_total{{from="openai/gpt-4o-mini",reason="{reason}",to="{FALLBACK}"}} 1.0' in metrics


def test_fallbacks_stream_say_so_on_every_front_and_stop_at_what_is_not_theirs(two: DaemonProcess, sim: Sim,
                                                                               sim2: Sim) -> None:
    with Client(two.socket) as c:
        c.config_set("routing.fallbacks", {"openai/gpt-4o-mini": [FALLBACK]})
        c.config_set("providers.openai.circuit_failures", 100)  # 12 failures in a row here: not the circuit's test
        c.config_set("server.http.enabled", True)
        sim.configure(errors=[529] * 4, retry_after=0)
        with c.stream("streamed", model="openai/gpt-4o-mini") as stream:
            text = "".join(stream)
        assert text == "Simulated reply to: streamed"
        assert stream.response is not None and stream.response.fallback is not None
        # The HTTP front says so in a header, on a plain answer and on a stream.
        token = (two.home / ".claif" / "http-token").read_text().strip()
        http_socket = eventually(lambda: c.status()["http"]["socket"])
        with httpx.Client(transport=httpx.HTTPTransport(uds=http_socket), base_url="http://claifd") as http:
            for stream_it in (False, True):
                sim.configure(errors=[529] * 4, retry_after=0)
                reply = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                                  json={"model": "openai/gpt-4o-mini", "stream": stream_it,
                                        "messages": [{"role": "user", "content": f"front {stream_it}"}]})
                assert reply.status_code == 200
                assert reply.headers["x-claif-fallback"] == f"openai/gpt-4o-mini -> {FALLBACK} (overloaded)"
        # A request the provider refused as such is not sent elsewhere.
        sim.configure(errors=[400])
        with pytest.raises(UpstreamError) as refused:
            c.complete("bad", model="openai/gpt-4o-mini")
        assert refused.value.details["status"] == 400
        # Never after a streamed byte: the stream breaks, nothing else answers.
        before = sim2.stats()["requests"]
        sim.configure(stream_cut_after=2)
        with pytest.raises(UpstreamError):
            with c.stream("cut midway", model="openai/gpt-4o-mini") as stream:
                "".join(stream)
        assert sim2.stats()["requests"] == before


def test_keys_are_spread_a_refused_one_is_set_aside_and_a_limited_one_rests(two: DaemonProcess, sim: Sim) -> None:
    good1, bad, good2 = "sk-first-good-key-AAAA", "sk-second-bad-key-BBBB", "sk-third-good-key-CCCC"
    with Client(two.socket) as c:
        c.config_set("providers.openai.api_keys", [good1, bad, good2])
        c.config_set("providers.openai.api_key", None)
        sim.configure(api_keys=[good1, good2])
        for i in range(6):
            assert c.complete(f"k{i}", model="openai/m").text == f"Simulated reply to: k{i}"
        assert sim.stats()["requests"] == 7  # the bad key was refused once, then set aside
        keys = {k["key"]: k for k in c.status()["providers"]["openai"]["keys"]}
        assert keys["#2 ...BBBB"]["state"] == "refused" and keys["#2 ...BBBB"]["uses"] == 1
        assert keys["#1 ...AAAA"]["uses"] == 3 and keys["#3 ...CCCC"]["uses"] == 3
        check = eventually(lambda: next((x for x in c.health()["checks"] if x["name"] == "provider:openai"
                                         and "#2 ...BBBB" in x["detail"]), None))
        assert check is not None and check["status"] == "warning"
        for secret in (good1, bad, good2):
            assert secret not in str(c.status()) and secret not in str(c.health())
        # A 429 with a long retry-after rests that key: the next one answers at once.
        sim.configure(errors=[429], retry_after=30)
        started = time.monotonic()
        assert c.complete("limited", model="openai/m").text == "Simulated reply to: limited"
        assert time.monotonic() - started < 5
        states = [k["state"] for k in c.status()["providers"]["openai"]["keys"]]
        assert states.count("resting") == 1 and states.count("refused") == 1
        # With every usable key resting, the caller is told how long to wait.
        c.config_set("retry.max_attempts", 1)
        sim.configure(errors=[429], retry_after=30)
        with pytest.raises(RateLimited):
            c.complete("limited again", model="openai/m")
        with pytest.raises(RateLimited) as resting:
            c.complete("all resting", model="openai/m")
        assert resting.value.retry_after is not None and resting.value.retry_after > 20
        # A change to the provider's keys starts them afresh.
        c.config_set("providers.openai.api_keys", [good1, good2])
        assert c.complete("fresh", model="openai/m").text == "Simulated reply to: fresh"


def test_the_circuit_opens_fails_fast_probes_and_closes(two: DaemonProcess, sim2: Sim) -> None:
    with Client(two.socket) as c:
        c.config_set("retry.max_attempts", 1)
        c.config_set("providers.local.circuit_failures", 3)
        c.config_set("providers.local.circuit_cooldown", 0.5)
        # Rate limits are answers: they never open it.
        sim2.configure(errors=[429] * 5, retry_after=0)
        for i in range(5):
            with pytest.raises(RateLimited):
                c.complete(f"rl{i}", model=FALLBACK)
        assert c.status()["providers"]["local"]["circuit"]["state"] == "closed"
        sim2.reset()
        sim2.configure(require_key=False, errors=[500] * 3)
        for i in range(3):
            with pytest.raises(UpstreamError):
                c.complete(f"e{i}", model=FALLBACK)
        assert c.status()["providers"]["local"]["circuit"]["state"] == "open"
        started = time.monotonic()
        with pytest.raises(CircuitOpen) as fast:
            c.complete("fast", model=FALLBACK)
        assert time.monotonic() - started < 0.2 and fast.value.retry_after is not None
        assert sim2.stats()["requests"] == 3  # the open circuit sent nothing
        check = eventually(lambda: next((x for x in c.health()["checks"] if x["name"] == "provider:local"
                                         and "circuit open" in x["detail"]), None))
        assert check is not None and check["status"] == "unhealthy"
        assert 'claif_provider_circuit_open{provider="local"} 1.0' in c.metrics()
        # After the cooldown one probe goes; it succeeds and the circuit closes.
        time.sleep(0.6)
        assert c.complete("probe", model=FALLBACK).text == "Simulated reply to: probe"
        assert c.status()["providers"]["local"]["circuit"]["state"] == "closed"
        # A failed probe opens it again at once; a config change closes it.
        sim2.configure(errors=[500] * 4)
        for i in range(3):
            with pytest.raises(UpstreamError):
                c.complete(f"again{i}", model=FALLBACK)
        time.sleep(0.6)
        with pytest.raises(UpstreamError):
            c.complete("failed probe", model=FALLBACK)
        assert c.status()["providers"]["local"]["circuit"]["state"] == "open"
        sim2.configure(errors=[])
        c.config_set("providers.local.circuit_cooldown", 60)
        assert c.status()["providers"]["local"]["circuit"]["state"] == "closed"
        assert c.complete("closed", model=FALLBACK).text == "Simulated reply to: closed"
        # An open circuit falls back like any dead provider.
        c.config_set("routing.fallbacks", {FALLBACK: ["openai/gpt-4o-mini"]})
        sim2.configure(errors=[500] * 3)
        for i in range(3):
            with pytest.raises(UpstreamError):
                c.complete(f"down{i}", model="local/other")  # (no fallback for this one)
        r = c.complete("via", model=FALLBACK)
        assert r.fallback is not None and r.fallback["reason"] == "circuit_open"
