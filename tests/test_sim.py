"""The simulator is faithful enough for the official SDKs: they parse its JSON
responses, its streams and its errors without complaint."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from .conftest import Sim, start_sim

# The SDKs warn about model deprecations by name; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def anthropic_client(sim: Sim) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-sdk", max_retries=0)


@pytest.fixture
def openai_client(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-sdk", max_retries=0)


def test_anthropic_sdk_message(anthropic_client: anthropic.Anthropic) -> None:
    msg = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, system="s", messages=[{"role": "user", "content": "hello sdk"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "Simulated reply to: hello sdk"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 5 and msg.usage.input_tokens == 3
    assert msg.id.startswith("msg_") and msg.role == "assistant"


def test_anthropic_sdk_stream(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=3, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == ["Simulated ", "reply ", "to: "]
    assert final.content[0].text == "Simulated reply to: "  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3


def test_anthropic_sdk_raw_events(anthropic_client: anthropic.Anthropic) -> None:
    events = list(anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, stream=True, messages=[{"role": "user", "content": "x"}]
    ))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"] or kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 4


def test_anthropic_sdk_models_and_errors(anthropic_client: anthropic.Anthropic, sim: Sim) -> None:
    assert "claude-sonnet-4-5" in [m.id for m in anthropic_client.models.list()]
    sim.configure(errors=[429, 529, 400])
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_anthropic_sdk_retries_on_injected_errors(sim: Sim) -> None:
    client = anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=3)
    sim.configure(errors=[429, 529, 500])
    msg = client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "ok"}])
    assert msg.content[0].text == "Simulated reply to: ok"  # type: ignore[union-attr]
    assert sim.stats()["requests"] == 4


def test_openai_sdk_completion(openai_client: openai.OpenAI) -> None:
    resp = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi oai"}]
    )
    assert resp.choices[0].message.content == "Simulated reply to: hi oai"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_openai_sdk_stream_with_usage(openai_client: openai.OpenAI) -> None:
    chunks = list(openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream oai"}],
        stream=True, stream_options={"include_usage": True}, max_tokens=4,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated reply to: stream "
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_openai_sdk_models_and_errors(openai_client: openai.OpenAI, sim: Sim) -> None:
    assert "gpt-4o-mini" in [m.id for m in openai_client.models.list()]
    sim.configure(errors=[429, 401, 500])
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_openai_sdk_mid_stream_error(openai_client: openai.OpenAI, sim: Sim) -> None:
    sim.configure(stream_error_after=2)
    with pytest.raises(openai.APIError):
        list(openai_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "a b c d"}], stream=True))


@pytest.mark.anyio
async def test_async_sdks(sim: Sim) -> None:
    a = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
    async with a.messages.stream(model="m", max_tokens=50, messages=[{"role": "user", "content": "async"}]) as s:
        assert "".join([t async for t in s.text_stream]) == "Simulated reply to: async"
    o = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
    resp = await o.chat.completions.create(model="m", messages=[{"role": "user", "content": "async"}])
    assert resp.choices[0].message.content == "Simulated reply to: async"


def test_stats_reset_and_auth(sim: Sim) -> None:
    r = httpx.post(sim.url + "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                   headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(sim.url + "/v1/chat/completions", content=b"{not json", headers={"authorization": "Bearer k"})
    assert r.status_code == 400
    assert sim.stats()["requests"] == 2
    sim.reset()
    assert sim.stats()["requests"] == 0
    assert httpx.get(sim.url + "/nope").status_code == 404


def test_command_line_options() -> None:
    sim = start_sim("--errors", "503,429", "--latency-ms", "1")
    try:
        client = openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert info.value.response.headers["retry-after"] == "0"
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
        assert sim.stats()["requests"] == 3
    finally:
        sim.proc.terminate()
        assert sim.proc.wait(timeout=10) == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------- the test faults


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunk_chars_cut_words_and_characters_for_both_sdks(
    anthropic_client: anthropic.Anthropic, openai_client: openai.OpenAI, sim: Sim, chunk: int
) -> None:
    sim.configure(chunk_chars=chunk)
    prompt = "naïve 日本語 words"
    text = "Simulated reply to: " + prompt
    expected = [text[i:i + chunk] for i in range(0, len(text), chunk)]
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        assert list(stream.text_stream) == expected
    chunks = openai_client.chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": prompt}]
    )
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == expected


@pytest.mark.parametrize(("fmt", "header"), [("seconds", "retry-after"), ("ms", "retry-after-ms"), ("date", "retry-after")])
def test_retry_after_formats(sim: Sim, fmt: str, header: str) -> None:
    from claifd.retry import retry_after_seconds

    sim.configure(errors=[429], retry_after=2, retry_after_format=fmt)
    r = httpx.post(sim.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                   json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429 and header in r.headers
    assert 2.0 <= (retry_after_seconds(r.headers) or 0) <= 3.0


def test_api_keys_refuse_any_other_key(openai_client: openai.OpenAI, sim: Sim) -> None:
    sim.configure(api_keys=["sk-other"])
    with pytest.raises(openai.AuthenticationError):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    sim.configure(api_keys=["sk-sdk"])
    assert openai_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]).choices


def test_hold_release_and_a_client_leaving_while_held(sim: Sim) -> None:
    import socket
    import threading

    sim.configure(hold=True)
    body = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    host, port = sim.url.removeprefix("http://").split(":")
    leaver = socket.create_connection((host, int(port)))
    leaver.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
                   b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    results: list[int] = []
    stayer = threading.Thread(target=lambda: results.append(httpx.post(
        sim.url + "/v1/chat/completions", content=body, headers={"authorization": "Bearer k"}, timeout=10).status_code))
    stayer.start()
    assert sim.wait_for(lambda s: s["held"] == 2)["held"] == 2
    leaver.close()  # noticed at once, though nothing is written to it
    stats = sim.wait_for(lambda s: s["disconnects"] == 1)
    assert stats["disconnects"] == 1 and stats["held"] == 1
    sim.http.post("/_sim/release").raise_for_status()
    stayer.join(timeout=10)
    assert results == [200] and sim.stats()["held"] == 0


def test_fast_mode_gives_the_same_answers_at_a_fraction_of_the_cost(sim: Sim) -> None:
    """`claif-sim --fast` (the benchmarks' upstream) answers JSON requests
    with the full simulator's own documents, keeps connections alive,
    answers pipelined requests in order, honours latency_ms, and refuses
    what it does not do (streams, faults) with a 400 that says so."""
    import socket
    import time

    fast = start_sim("--fast")
    try:
        full_oa = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-sdk", max_retries=0)
        fast_oa = openai.OpenAI(base_url=fast.url + "/v1", api_key="sk-sdk", max_retries=0)
        msgs = [{"role": "user", "content": "same answer please"}]
        a = full_oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=3)  # type: ignore[arg-type]
        b = fast_oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=3)  # type: ignore[arg-type]
        assert b.choices[0].message.content == a.choices[0].message.content == "Simulated reply to: "
        assert b.choices[0].finish_reason == a.choices[0].finish_reason == "length"
        assert b.usage == a.usage
        full_an = anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-sdk", max_retries=0)
        fast_an = anthropic.Anthropic(base_url=fast.url, api_key="sk-ant-sdk", max_retries=0)
        x = full_an.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs)  # type: ignore[arg-type]
        y = fast_an.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs)  # type: ignore[arg-type]
        assert y.content == x.content and y.usage == x.usage and y.stop_reason == x.stop_reason
        assert [m.id for m in fast_oa.models.list()] == [m.id for m in full_oa.models.list()]
        no_key = fast.http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": msgs})
        assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "invalid_api_key"
        with pytest.raises(openai.BadRequestError, match="without --fast"):
            fast_oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True)  # type: ignore[arg-type]
        assert fast.http.post("/_sim/config", json={"errors": [500]}).status_code == 400

        # Three pipelined requests on one connection: three answers, in order.
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"n%d"}]}'
        host, port = fast.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            for i in range(3):
                one = body % i
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
                          b"content-length: %d\r\n\r\n%s" % (len(one), one))
            got = b""
            while got.count(b"Simulated reply to: n") < 3:
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
        assert [got.index(b"reply to: n%d" % i) for i in range(3)] == sorted(got.index(b"reply to: n%d" % i) for i in range(3))

        assert fast.http.post("/_sim/config", json={"latency_ms": 200}).status_code == 200
        t0 = time.monotonic()
        fast_oa.chat.completions.create(model="gpt-4o-mini", messages=msgs)  # type: ignore[arg-type]
        assert time.monotonic() - t0 >= 0.19
        assert fast.stats()["requests"] >= 7
    finally:
        fast.http.close()
        fast.proc.terminate()
        fast.proc.wait(timeout=10)
