"""The HTTP providers through the real daemon against the simulator, over real
sockets: request shaping, streaming, retries, typed errors, cancellation,
batching and concurrency limits."""

from __future__ import annotations

import threading

import pytest

from claif_client import (
    BadRequest,
    Client,
    NotConfigured,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from claif_client.protocol import Cancel, Complete, CompletionRequest, Error, Message

from .conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, DaemonProcess, RawConnection, Sim, eventually, sim_env

MODELS = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"]
RETRY_STATUSES = [408, 409, 429, 500, 502, 503, 504, 529]


@pytest.mark.parametrize("model", MODELS)
def test_plain_completion(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    with Client(upstream_daemon.socket) as c:
        r = c.complete("hello there", model=model, max_tokens=50)
    assert r.text == "Simulated reply to: hello there"
    assert r.model == model
    assert r.stop_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (2, 5)
    assert r.content == [{"type": "text", "text": r.text}]
    assert sim.stats()["requests"] == 1


@pytest.mark.parametrize("model", MODELS)
def test_streamed_completion(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    with Client(upstream_daemon.socket) as c:
        stream = c.stream("stream this please", model=model)
        deltas = list(stream)
    assert deltas == ["Simulated ", "reply ", "to: ", "stream ", "this ", "please"]
    assert stream.response is not None
    assert stream.response.text == "".join(deltas)
    assert stream.response.usage.output_tokens == 6
    assert stream.response.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_stop_reason(upstream_daemon: DaemonProcess, model: str) -> None:
    with Client(upstream_daemon.socket) as c:
        r = c.complete("one two three four five", model=model, max_tokens=2)
    assert r.text == "Simulated reply " and r.stop_reason == "max_tokens"


def test_anthropic_request_shape(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]
    with Client(upstream_daemon.socket) as c:
        c.complete(
            [{"role": "user", "content": "q"}], model="anthropic/claude-x", system="be brief",
            temperature=0.3, max_tokens=77, top_p=0.9, top_k=5, stop=["END"], tools=tools,
            tool_choice={"type": "auto"}, metadata={"trace": "t1"}, extra={"service_tier": "auto"},
        )
        c.complete("no max tokens", model="anthropic/claude-x")
    first, second = sim.requests()
    body = first["body"]
    assert first["path"] == "/v1/messages" and first["has_api_key"] and first["anthropic_version"] == "2023-06-01"
    assert body == {
        "model": "claude-x", "messages": [{"role": "user", "content": "q"}], "max_tokens": 77,
        "system": "be brief", "temperature": 0.3, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
        "tools": tools, "tool_choice": {"type": "auto"}, "service_tier": "auto",
    }
    assert second["body"]["max_tokens"] == 4096, "the Messages API needs max_tokens: the configured default"


def test_openai_request_shape(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("q", model="openai/gpt-x", system="sys", temperature=0.5, max_tokens=9, stop=["x"], top_k=3)
        list(c.stream("s", model="openai/gpt-x"))
    plain, streamed = sim.requests()
    assert plain["path"] == "/v1/chat/completions" and plain["has_api_key"]
    assert plain["body"] == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}],
        "max_tokens": 9, "temperature": 0.5, "stop": ["x"],
    }
    assert streamed["body"]["stream"] is True and streamed["body"]["stream_options"] == {"include_usage": True}


def test_system_messages_in_the_list_become_anthropic_system(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete([{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}], model="anthropic/m")
    body = sim.requests()[0]["body"]
    assert body["system"] == "rules" and body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("status", RETRY_STATUSES)
@pytest.mark.parametrize("model", MODELS)
def test_retry_on_each_retryable_status(upstream_daemon: DaemonProcess, sim: Sim, model: str, status: int) -> None:
    sim.configure(errors=[status])
    with Client(upstream_daemon.socket) as c:
        before = c.status()["upstream"]["retries"]
        assert c.complete("again", model=model).text == "Simulated reply to: again"
        assert c.status()["upstream"]["retries"] == before + 1
    assert sim.stats()["requests"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_streamed_request_retried_before_any_byte(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    sim.configure(errors=[529, 503])
    with Client(upstream_daemon.socket) as c:
        assert "".join(c.stream("late start", model=model)) == "Simulated reply to: late start"
    assert sim.stats()["requests"] == 3


@pytest.mark.parametrize(("fmt", "wait"), [("seconds", 0.4), ("ms", 0.4), ("date", 1.0)])
def test_retry_after_is_honoured(upstream_daemon: DaemonProcess, sim: Sim, fmt: str, wait: float) -> None:
    # The backoff is at most 50 ms (sim_env): a longer gap can only come from
    # the retry-after the simulator sent (an HTTP date is whole seconds, so
    # it asks for between 1 and 2 s).
    sim.configure(errors=[429], retry_after=wait, retry_after_format=fmt)
    with Client(upstream_daemon.socket) as c:
        assert c.complete("patience", model="openai/gpt-4o-mini").text == "Simulated reply to: patience"
    refused, served = sim.requests()
    assert refused["status"] == 429 and "body" in served
    gap = served["received"] - refused["received"]  # type: ignore[operator]
    assert wait - 0.01 <= gap < wait + 1.5


@pytest.mark.parametrize("model", MODELS)
def test_no_retry_after_the_first_streamed_byte(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    sim.configure(stream_cut_after=2)
    got: list[str] = []
    with Client(upstream_daemon.socket) as c:
        with pytest.raises(UpstreamError):
            for delta in c.stream("a b c d e f", model=model):
                got.append(delta)
        assert got == ["Simulated ", "reply "]
        assert sim.stats()["requests"] == 1
        # Same for an error event in the middle of the stream.
        sim.reset()
        sim.configure(stream_error_after=3)
        got.clear()
        with pytest.raises(UpstreamError) as info:
            for delta in c.stream("a b c d e f", model=model):
                got.append(delta)
        assert len(got) == 3 and "stream error" in str(info.value)
        assert sim.stats()["requests"] == 1


def test_stream_cut_before_any_text_is_retried(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    # The connection drops after the stream's first events but before any
    # text: nothing reached the client, so each attempt is retried, and when
    # the budget is spent the client gets one clean error.
    sim.configure(stream_cut_after=0)
    with Client(upstream_daemon.socket) as c:
        with pytest.raises(UpstreamError):
            list(c.stream("x", model="anthropic/m"))
    assert sim.stats()["requests"] == 4


def test_typed_errors_after_the_retry_budget(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.config_set("providers.openai.circuit_failures", 100)  # 8 failures in a row here: the ladder, not the circuit
        sim.configure(errors=[429] * 4, retry_after=0)
        with pytest.raises(RateLimited) as rl:
            c.complete("x", model="anthropic/m")
        assert rl.value.code == "rate_limited" and rl.value.retry_after == 0
        assert rl.value.details["status"] == 429
        assert sim.stats()["requests"] == 4  # retry.max_attempts
        sim.reset()
        sim.configure(errors=[500] * 4)
        with pytest.raises(UpstreamError) as ue:
            c.complete("x", model="openai/m")
        assert ue.value.code == "upstream_error" and ue.value.details["status"] == 500
        assert "openai answered 500" in ue.value.message
        sim.reset()
        sim.configure(errors=[504] * 4)
        with pytest.raises(UpstreamTimeout):
            c.complete("x", model="openai/m")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(upstream_daemon: DaemonProcess, sim: Sim, status: int) -> None:
    sim.configure(errors=[status])
    with Client(upstream_daemon.socket) as c:
        with pytest.raises(UpstreamError) as info:
            c.complete("x", model="anthropic/m")
    assert info.value.details["status"] == status
    assert sim.stats()["requests"] == 1


def test_keys_never_appear_in_logs_or_replies(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("x", model="anthropic/m")
        list(c.stream("y", model="openai/m"))
        messages = []
        for model in MODELS:
            sim.configure(errors=[401])
            with pytest.raises(UpstreamError) as info:
                c.complete("x", model=model)
            messages.append(str(info.value))
        status = str(c.status())
    assert all("Incorrect API key provided: [redacted]" in m for m in messages)
    assert upstream_daemon.stop() == 0
    logs = upstream_daemon.log_path.read_text()
    assert "retrying" in logs or "request done" in logs, "debug logging should be on for this test"
    for secret in (ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, "SECRET"):
        assert secret not in logs
        assert secret not in status
        assert all(secret not in m for m in messages)
    upstream_daemon.start()


def test_missing_key_is_not_configured(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    env = sim_env(sim)
    del env["OPENAI_API_KEY"]
    d = daemon_factory(env=env)
    with Client(d.socket) as c:
        with pytest.raises(NotConfigured) as info:
            c.complete("x", model="openai/m")
        assert "OPENAI_API_KEY" in str(info.value)
        assert c.complete("x", model="anthropic/m").text  # the other provider is fine
    assert sim.stats()["requests"] == 1
    assert d.stop() == 0


def test_key_from_config_wins_over_environment(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    env = sim_env(sim, CLAIF_PROVIDERS__OPENAI__API_KEY="sk-from-config")
    d = daemon_factory(env=env)
    with Client(d.socket) as c:
        sim.configure(api_keys=["sk-from-config"])  # the environment's key would be refused
        assert c.complete("x", model="openai/m").text == "Simulated reply to: x"
        sim.configure(api_keys=[OPENAI_TEST_KEY])  # and the config's key is what was sent
        with pytest.raises(UpstreamError) as info:
            c.complete("y", model="openai/m")
    assert info.value.code == "upstream_error" and "401" in str(info.value)
    assert "sk-from-config" not in str(info.value)
    assert d.stop() == 0


def test_unreachable_upstream(daemon_factory, short_tmp) -> None:  # type: ignore[no-untyped-def]
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    d = daemon_factory(env={
        "CLAIF_PROVIDERS__OPENAI__BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "k",
        "CLAIF_RETRY__BASE_DELAY": "0.01",
    })
    with Client(d.socket) as c:
        with pytest.raises(UpstreamError) as info:
            c.complete("x", model="openai/m")
        assert "cannot connect" in str(info.value)
        assert c.status()["upstream"]["retries"] == 3
    assert d.stop() == 0


@pytest.mark.parametrize("model", MODELS)
def test_cancel_mid_stream_closes_the_upstream_connection(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    sim.configure(token_delay_ms=50)
    with Client(upstream_daemon.socket) as c:
        stream = c.stream(" ".join(["w"] * 200), model=model)
        assert next(stream) and next(stream)
        stream.close()
        stats = sim.wait_for(lambda s: s["disconnects"] >= 1 and s["in_flight"] == 0)
        assert stats["disconnects"] == 1 and stats["in_flight"] == 0
        provider = model.split("/")[0]
        assert eventually(lambda: (s := c.status())["in_flight"] == 0 and s["providers"][provider]["in_flight"] == 0)
        # The pool is healthy afterwards.
        assert c.complete("after", model=model).text == "Simulated reply to: after"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("how", ["cancel", "disconnect"])
def test_cancel_or_disconnect_cancels_the_upstream_call(upstream_daemon: DaemonProcess, sim: Sim, how: str, stream: bool) -> None:
    """The upstream call stops while it waits for the first byte: the
    simulator sees its connection close (it reads while it waits)."""
    sim.configure(latency_ms=10_000)
    conn = RawConnection(upstream_daemon.socket)
    request = CompletionRequest(messages=[Message("user", "slow")], model="anthropic/m")
    conn.send(Complete(id=1, request=request, stream=stream))
    sim.wait_for(lambda s: s["in_flight"] == 1)
    if how == "cancel":
        conn.send(Cancel(id=1))
        reply = conn.read()
        assert isinstance(reply, Error) and reply.code == "cancelled"
    else:
        conn.close()
    stats = sim.wait_for(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert stats["disconnects"] == 1 and stats["in_flight"] == 0 and stats["requests"] == 1
    with Client(upstream_daemon.socket) as c:
        assert eventually(lambda: c.status()["providers"]["anthropic"]["in_flight"] == 0)
        assert c.status()["in_flight"] == 0
    conn.close()


def test_per_provider_concurrency_limit_queues(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_PROVIDERS__OPENAI__MAX_CONCURRENCY="3"))
    sim.configure(hold=True)
    results: list[str] = []

    def one(i: int) -> None:
        with Client(d.socket) as c:
            results.append(c.complete(f"q{i}", model="openai/m").text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    with Client(d.socket) as c:
        # Three calls reach the upstream; the other seven wait in the daemon.
        assert sim.wait_for(lambda s: s["held"] == 3)["held"] == 3
        providers = eventually(lambda: (p := c.status()["providers"]["openai"])["queued"] == 7 and p)
        assert {k: providers[k] for k in ("in_flight", "queued", "max_concurrency")} == \
            {"in_flight": 3, "queued": 7, "max_concurrency": 3}
        assert sim.stats()["requests"] == 3
        sim.http.post("/_sim/release").raise_for_status()
        for t in threads:
            t.join()
    assert sorted(results) == sorted(f"Simulated reply to: q{i}" for i in range(10))
    assert sim.stats()["peak_concurrency"] == 3
    assert d.stop() == 0


# -------------------------------------------------------------------- batch


def test_batch_order_errors_and_concurrency(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(latency_ms=30)
    requests = []
    for i in range(40):
        model = "nosuch/model" if i % 10 == 7 else MODELS[i % 2]
        requests.append(CompletionRequest(messages=[Message(role="user", content=f"item {i}")], model=model))
    progress: list[dict[str, object]] = []
    with Client(upstream_daemon.socket) as c:
        items = c.batch(requests, concurrency=4, on_progress=progress.append)
    assert [item.index for item in items] == list(range(40))
    for i, item in enumerate(items):
        if i % 10 == 7:
            assert item.response is None and item.error is not None and item.error.code == "bad_request"
        else:
            assert item.error is None and item.response is not None
            assert item.response.text == f"Simulated reply to: item {i}"
    assert sim.stats()["peak_concurrency"] <= 4
    assert sim.stats()["peak_concurrency"] >= 3, "the batch should actually run concurrently"
    assert len(progress) == 40 and progress[-1]["done"] == 40 and progress[-1]["total"] == 40
    assert sum(1 for p in progress if not p["ok"]) == 4


def test_batch_uses_config_concurrency_and_survives_upstream_failures(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_BATCH__CONCURRENCY="2", CLAIF_RETRY__MAX_ATTEMPTS="1"))
    sim.configure(latency_ms=20, errors=[500, 500])
    with Client(d.socket) as c:
        items = c.batch([{"messages": [{"role": "user", "content": f"b{i}"}], "model": "anthropic/m"} for i in range(8)])
    failed = [i for i in items if i.error is not None]
    assert len(failed) == 2 and all(i.error.code == "upstream_error" for i in failed)  # type: ignore[union-attr]
    # A batch item's error carries the same details as a reply's.
    assert all(i.error.details == {"status": 500, "provider": "anthropic"} for i in failed)  # type: ignore[union-attr]
    assert sum(1 for i in items if i.response is not None) == 6
    assert sim.stats()["peak_concurrency"] <= 2
    assert d.stop() == 0


def test_batch_cancel(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    """Giving up on a batch (here: the progress callback raises) cancels the rest."""
    sim.configure(latency_ms=200)

    class Stop(Exception):
        pass

    def stop(progress: dict[str, object]) -> None:
        raise Stop

    with Client(upstream_daemon.socket) as c:
        with pytest.raises(Stop):
            c.batch([{"messages": [{"role": "user", "content": "x"}], "model": "openai/m"}] * 20,
                    concurrency=2, on_progress=stop)
        stats = sim.wait_for(lambda s: s["in_flight"] == 0)
        assert stats["requests"] <= 4, "cancelled batch items must not start"
        assert eventually(lambda: c.status()["in_flight"] == 0)


@pytest.mark.anyio
async def test_async_client_upstream_and_batch(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    from claif_client import AsyncClient

    async with AsyncClient(upstream_daemon.socket) as c:
        r = await c.complete("async up", model="anthropic/m")
        assert r.text == "Simulated reply to: async up"
        assert "".join([d async for d in c.stream("s up", model="openai/m")]) == "Simulated reply to: s up"
        seen: list[dict[str, object]] = []
        items = await c.batch([{"messages": [{"role": "user", "content": f"a{i}"}], "model": "openai/m"} for i in range(6)],
                              concurrency=3, on_progress=seen.append)
        assert [i.response.text for i in items] == [f"Simulated reply to: a{i}" for i in range(6)]  # type: ignore[union-attr]
        assert len(seen) == 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_no_task_or_connection_leak_after_many_cancellations(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(token_delay_ms=5)
    with Client(upstream_daemon.socket) as c:
        list(c.stream("warm", model="anthropic/m"))
        baseline = c.status()["tasks"]
        for i in range(40):
            stream = c.stream(" ".join(["w"] * 100), model=MODELS[i % 2])
            next(stream)
            stream.close()
        # Each cancellation is finished a moment after its client stopped
        # reading; a leak is a count that never comes back.
        status = eventually(
            lambda: (s := c.status())["in_flight"] == 0 and s["pool"]["in_flight"] == 0 and s["tasks"] <= baseline and s
        ) or c.status()
        assert status["in_flight"] == 0 and status["pool"]["in_flight"] == 0
        assert status["tasks"] <= baseline, (status["tasks"], baseline)
    stats = sim.wait_for(lambda s: s["in_flight"] == 0)
    assert stats["in_flight"] == 0 and stats["disconnects"] == 40


def test_a_pool_setting_changed_live_builds_a_new_pool(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        pool = c.status()["pool"]
        assert pool["transport"] == "aiohttp"  # auto: aiohttp, the one upstream client
        assert c.complete("one", model="openai/m").text.startswith("Simulated reply")
        c.config_set("pool.max_connections", 7)
        after = c.status()["pool"]
        assert after["generation"] == pool["generation"] + 1 and after["max_connections"] == 7
        assert c.complete("two", model="openai/m").text.startswith("Simulated reply")
        assert "".join(c.stream("three", model="anthropic/m", cache=False)).startswith("Simulated reply")
        # httpx's httpcore was the other client until it was measured out: a clear refusal.
        with pytest.raises(BadRequest, match="'httpcore'.*pool.transport"):
            c.config_set("pool.transport", "httpcore")
        assert c.status()["pool"]["generation"] == after["generation"]
