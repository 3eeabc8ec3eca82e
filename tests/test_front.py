"""The HTTP front with the official SDKs: both wire formats, JSON and
streams, tools round trips, any model through either wire, errors as the
SDKs' own classes, auth, and the x-claif-* headers."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from claif_client import Client
from claif_client.errors import BadRequest

from .conftest import DaemonProcess, Sim, eventually, sim_env
from .test_monitoring import samples_of

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-sonnet-4-5"
WEATHER_OPENAI = [{"type": "function", "function": {"name": "get_weather", "description": "the weather",
                                                    "parameters": {"type": "object",
                                                                   "properties": {"query": {"type": "string"}}}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "the weather",
                      "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


class Front:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        with Client(daemon.socket) as c:
            info = c.status()["http"]
        self.address = info["listen"]
        self.socket = info["socket"]
        self.token = (daemon.home / ".claif" / "http-token").read_text().strip()
        self.url = f"http://{self.address}"

    def openai(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.token, max_retries=0, **kw)  # type: ignore[arg-type]

    def anthropic(self, **kw: object) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=self.token, max_retries=0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def front(daemon_factory, sim: Sim) -> Iterator[Front]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true",
                                   CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    yield Front(d)
    assert d.stop() == 0


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_openai_sdk_plain_and_streamed(front: Front, model: str) -> None:
    client = front.openai()
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "Simulated reply to: hello there"
    assert r.model == model and r.choices[0].finish_reason == "stop" and r.object == "chat.completion"
    assert r.usage is not None and r.usage.completion_tokens == 5
    raw = client.chat.completions.with_raw_response.create(model=model,
                                                           messages=[{"role": "user", "content": "hello there"}])
    assert raw.headers["x-claif-cache-status"] == "hit-exact" and raw.headers["x-claif-request-id"]

    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "stream me"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Simulated reply to: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert {c.id for c in chunks} == {chunks[0].id}


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_anthropic_sdk_plain_and_streamed(front: Front, model: str) -> None:
    client = front.anthropic()
    m = client.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "hello there"}])
    assert m.type == "message" and m.role == "assistant" and m.model == model
    assert m.content[0].type == "text" and m.content[0].text == "Simulated reply to: hello there"
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 5
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "stream me"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Simulated reply to: stream me" and final.stop_reason == "end_turn"
    events = [e.type for e in client.messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "events please"}], stream=True)]
    assert events[0] == "message_start" and events[1] == "content_block_start"
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("model", [GPT, CLAUDE])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_tools_round_trip(front: Front, model: str, stream: bool) -> None:
    client = front.openai()
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, tools=WEATHER_OPENAI,  # type: ignore[arg-type]
                                                     stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        call_id, name, args = calls[0].id, calls[0].function.name, "".join(c.function.arguments or "" for c in calls)  # type: ignore[union-attr]
    else:
        r = client.chat.completions.create(model=model, messages=messages, tools=WEATHER_OPENAI)  # type: ignore[arg-type]
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
        call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, name, args = call.id, call.function.name, call.function.arguments  # type: ignore[union-attr]
    assert name == "get_weather" and json.loads(args) == {"query": "weather in Paris?"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}]
    answer = client.chat.completions.create(model=model, messages=messages, tools=WEATHER_OPENAI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Simulated reply to: sunny, 21 C"


@pytest.mark.parametrize("model", [GPT, CLAUDE])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tools_round_trip(front: Front, model: str, stream: bool) -> None:
    client = front.anthropic()
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.messages.stream(model=model, max_tokens=100, messages=messages, tools=WEATHER_ANTHROPIC) as s:  # type: ignore[arg-type]
            first = s.get_final_message()
    else:
        first = client.messages.create(model=model, max_tokens=100, messages=messages, tools=WEATHER_ANTHROPIC)  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"query": "weather in Paris?"}  # type: ignore[union-attr]
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,  # type: ignore[union-attr]
                                               "content": "sunny, 21 C"}]}]
    answer = client.messages.create(model=model, max_tokens=100, messages=messages, tools=WEATHER_ANTHROPIC)  # type: ignore[arg-type]
    assert answer.content[0].text == "Simulated reply to: sunny, 21 C"  # type: ignore[union-attr]


def test_cross_wire_translation_reaches_upstream_in_its_own_format(front: Front, sim: Sim) -> None:
    """OpenAI shape to an Anthropic model, and the reverse: system, tools, tool calls and results."""
    front.openai().chat.completions.create(model=CLAUDE, tools=WEATHER_OPENAI, tool_choice="required", messages=[  # type: ignore[arg-type]
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"query\": \"q\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}], seed=7, stop="END",
        extra_headers={"x-claif-drop-params": "true"})
    body = sim.requests()[-1]["body"]
    assert body["system"] == "be brief" and body["tools"] == WEATHER_ANTHROPIC  # type: ignore[index]
    assert body["tool_choice"] == {"type": "any"} and body["stop_sequences"] == ["END"]  # type: ignore[index]
    assert body["messages"] == [  # type: ignore[index]
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get_weather",
                                           "input": {"query": "q"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r"}]}]
    assert "seed" not in body  # type: ignore[operator]

    front.anthropic().messages.create(model=GPT, max_tokens=50, system="be brief", tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
                                      tool_choice={"type": "tool", "name": "get_weather"}, messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get_weather",
                                           "input": {"query": "q"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r"}]}])
    body = sim.requests()[-1]["body"]
    assert body["tools"] == WEATHER_OPENAI and body["max_tokens"] == 50  # type: ignore[index]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}  # type: ignore[index]
    assert body["messages"] == [  # type: ignore[index]
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"query\":\"q\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]

    # System blocks reach an OpenAI upstream as paragraphs, not run together.
    front.anthropic().messages.create(model=GPT, max_tokens=50, messages=[{"role": "user", "content": "q2"}],
                                      system=[{"type": "text", "text": "You are terse."},
                                              {"type": "text", "text": "Second block."}])
    body = sim.requests()[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are terse.\n\nSecond block."}  # type: ignore[index]


def test_openai_only_fields_pass_through_to_openai(front: Front, sim: Sim) -> None:
    front.openai().chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}], seed=7,
                                           response_format={"type": "json_object"}, user="u1")
    body = sim.requests()[-1]["body"]
    assert body["seed"] == 7 and body["response_format"] == {"type": "json_object"} and body["user"] == "u1"  # type: ignore[index]


def test_errors_are_the_sdks_own_classes(front: Front, sim: Sim) -> None:
    oa, an = front.openai(), front.anthropic()
    cases: list[tuple[list[int], type[Exception], type[Exception]]] = [
        ([400], openai.BadRequestError, anthropic.BadRequestError),
        ([401], openai.AuthenticationError, anthropic.AuthenticationError),
        ([404], openai.NotFoundError, anthropic.NotFoundError),
    ]
    for i, (errors, oa_cls, an_cls) in enumerate(cases):
        sim.configure(errors=errors)
        with pytest.raises(oa_cls):
            oa.chat.completions.create(model=GPT, messages=[{"role": "user", "content": f"e{i}"}])
        sim.configure(errors=errors)
        with pytest.raises(an_cls):
            an.messages.create(model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": f"e{i}"}])
    with Client(front.daemon.socket) as c:
        c.config_set("retry.max_attempts", 1)
    sim.configure(errors=[429], retry_after=3)
    with pytest.raises(openai.RateLimitError) as rate:
        oa.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "rl"}])
    assert rate.value.response.headers["retry-after"] == "3"
    assert rate.value.response.headers["retry-after-ms"] == "3000"
    assert rate.value.response.headers["x-should-retry"] == "false"
    sim.configure(errors=[529])
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        an.messages.create(model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "ov"}])
    assert overloaded.value.status_code == 529
    with pytest.raises(openai.BadRequestError, match="n must be an integer from 1 to 128"):
        oa.chat.completions.create(model=GPT, n=0, messages=[{"role": "user", "content": "x"}])
    missing = httpx.post(front.url + "/v1/messages", headers={"x-api-key": front.token},
                         json={"model": CLAUDE, "messages": [{"role": "user", "content": "x"}]})
    assert missing.status_code == 400 and missing.json()["error"] == {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}
    with Client(front.daemon.socket) as c:
        c.config_set("client.timeout", 0.3)
    sim.configure(latency_ms=2000)
    with pytest.raises(openai.InternalServerError) as slow:
        oa.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "slow"}])
    assert slow.value.status_code == 504
    sim.configure(latency_ms=0)


def test_auth_token_and_unix_socket(front: Front) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=front.url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "x"}])
    assert (front.daemon.home / ".claif" / "http-token").stat().st_mode & 0o777 == 0o600
    unix = httpx.Client(transport=httpx.HTTPTransport(uds=front.socket))
    client = openai.OpenAI(base_url="http://claifd/v1", api_key="unused", http_client=unix, max_retries=0)
    r = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "over unix"}])
    assert r.choices[0].message.content == "Simulated reply to: over unix"
    assert Path(front.socket).stat().st_mode & 0o777 == 0o600


def test_cache_headers_models_metrics_health_count_tokens(front: Front, sim: Sim) -> None:
    h = {"authorization": f"Bearer {front.token}"}
    body = {"model": GPT, "messages": [{"role": "user", "content": "headers"}]}
    first = httpx.post(front.url + "/v1/chat/completions", headers=h, json=body)
    assert first.headers["x-claif-cache-status"] == "miss"
    assert httpx.post(front.url + "/v1/chat/completions", headers=h, json=body).headers[
        "x-claif-cache-status"] == "hit-exact"
    bypass = httpx.post(front.url + "/v1/chat/completions", headers={**h, "x-claif-cache": "bypass"}, json=body)
    assert bypass.headers["x-claif-cache-status"] == "miss"
    only = httpx.post(front.url + "/v1/chat/completions", headers={**h, "x-claif-cache": "only"},
                      json={**body, "messages": [{"role": "user", "content": "never asked"}]})
    assert only.status_code == 404 and only.json()["error"]["type"] == "not_found_error"
    other = httpx.post(front.url + "/v1/chat/completions", headers={**h, "x-claif-namespace": "team"}, json=body)
    assert other.headers["x-claif-cache-status"] == "miss"
    short = {**body, "messages": [{"role": "user", "content": "short-lived"}]}
    httpx.post(front.url + "/v1/chat/completions", headers={**h, "x-claif-ttl": "0.2"}, json=short)
    time.sleep(0.4)
    assert httpx.post(front.url + "/v1/chat/completions", headers=h, json=short).headers[
        "x-claif-cache-status"] == "miss"

    oa_models = httpx.get(front.url + "/v1/models", headers=h).json()
    assert oa_models["object"] == "list" and any(m["id"] == "echo/default" for m in oa_models["data"])
    an_models = httpx.get(front.url + "/v1/models", headers={**h, "anthropic-version": "2023-06-01"}).json()
    assert an_models["has_more"] is False and an_models["data"][0]["type"] == "model"
    assert "claif_requests_total" in httpx.get(front.url + "/metrics", headers=h).text
    assert httpx.get(front.url + "/health", headers=h).json()["status"] in ("healthy", "warning")
    count = front.anthropic().messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "a b c"}])
    assert count.input_tokens == 3
    assert sim.requests()[-1]["path"].endswith("/count_tokens")
    count = front.anthropic().messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "a b c d"}])
    assert count.input_tokens == 4 and sim.requests()[-1]["body"]["model"] == "claude-sonnet-4-5"  # type: ignore[index]
    # Any other model: an estimate, said so, and nothing sent to Anthropic.
    seen = len(sim.requests())
    for model in (GPT, "echo/x"):
        raw = front.anthropic().messages.with_raw_response.count_tokens(
            model=model, system="be brief", messages=[{"role": "user", "content": "x" * 40}])
        assert raw.parse().input_tokens == 10 + 4 + 2 and "estimate" in raw.headers["x-claif-estimate"]
    assert len(sim.requests()) == seen


def test_one_model_by_id(front: Front) -> None:
    """models.retrieve: the openai SDK percent-encodes the slash."""
    oa = front.openai()
    assert oa.models.retrieve("echo/default").id == "echo/default"
    assert oa.models.retrieve("openai/gpt-4o-mini").id == "openai/gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("openai/no-such-model")
    an = front.anthropic().models.retrieve("echo/default")
    assert an.id == "echo/default" and an.type == "model"


def test_session_header_keeps_a_conversation(front: Front, sim: Sim) -> None:
    with Client(front.daemon.socket) as c:
        sid = c.session_create()["id"]
    client = front.openai()
    for text in ("first", "second"):
        client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": text}],
                                       extra_headers={"x-claif-session": sid})
    assert [m["content"] for m in sim.requests()[-1]["body"]["messages"]] == [  # type: ignore[index]
        "first", "Simulated reply to: first", "second"]


def test_claif_token_and_env(front: Front) -> None:
    from .test_cli import claif

    assert claif("token", socket=front.daemon.socket).stdout.strip() == front.token
    env = dict(line.removeprefix("export ").split("=", 1)
               for line in claif("env", socket=front.daemon.socket).stdout.splitlines())
    assert env == {"OPENAI_BASE_URL": front.url + "/v1", "OPENAI_API_KEY": front.token,
                   "ANTHROPIC_BASE_URL": front.url, "ANTHROPIC_API_KEY": front.token}
    r = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"], max_retries=0).models.list()
    assert any(m.id == GPT for m in r.data) or r.data


def test_claif_token_says_when_the_front_is_off(daemon: DaemonProcess) -> None:
    from .test_cli import claif

    out = claif("token", socket=daemon.socket)
    assert out.returncode == 2 and "server.http.enabled" in out.stderr


def test_prompt_cache_tokens_cross_wires(front: Front) -> None:
    """Anthropic's cache_read_input_tokens reach an OpenAI-shaped caller as prompt_tokens_details.cached_tokens
    (the caller's own marker, written by the first call, read by the second)."""
    system = [{"type": "text", "text": " ".join(["preamble"] * 1100), "cache_control": {"type": "ephemeral"}}]
    m = front.anthropic().messages.create(model=CLAUDE, max_tokens=20, system=system,  # type: ignore[arg-type]
                                          messages=[{"role": "user", "content": "q"}])
    assert m.usage.cache_creation_input_tokens == 1100 and m.usage.cache_read_input_tokens == 0
    r = front.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "q2"}],
                                               extra_body={"system": system})
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 1100 and r.usage.prompt_tokens == 1101


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_are_n_completions(front: Front, sim: Sim, stream: bool) -> None:
    client = front.openai()
    before = sim.stats()["requests"]
    args = {"model": GPT, "n": 3, "messages": [{"role": "user", "content": f"three ways {stream}"}]}
    if stream:
        chunks = list(client.chat.completions.create(**args, stream=True))  # type: ignore[call-overload]
        texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                 for i in range(3)}
        assert set(texts.values()) == {f"Simulated reply to: three ways {stream}"}
        assert sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason) == [0, 1, 2]
    else:
        r = client.chat.completions.create(**args)  # type: ignore[call-overload]
        assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens == 3 * 6
    assert sim.stats()["requests"] == before + 3  # one upstream completion per choice
    again = client.chat.completions.create(**{**args, "stream": False})  # type: ignore[call-overload]
    assert len(again.choices) == 3 and sim.stats()["requests"] == before + 3  # each served from the cache


@pytest.mark.anyio
async def test_async_sdks(front: Front) -> None:
    oa = openai.AsyncOpenAI(base_url=front.url + "/v1", api_key=front.token, max_retries=0)
    r = await oa.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "async one"}])
    assert r.choices[0].message.content == "Simulated reply to: async one"
    stream = await oa.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "async two"}],
                                              stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == \
        "Simulated reply to: async two"
    an = anthropic.AsyncAnthropic(base_url=front.url, api_key=front.token, max_retries=0)
    m = await an.messages.create(model=GPT, max_tokens=20, messages=[{"role": "user", "content": "async three"}],
                                 tools=WEATHER_ANTHROPIC)  # type: ignore[arg-type]
    assert m.stop_reason == "tool_use"
    async with an.messages.stream(model=CLAUDE, max_tokens=20,
                                  messages=[{"role": "user", "content": "async four"}]) as s:
        assert "".join([t async for t in s.text_stream]) == "Simulated reply to: async four"
    await oa.close()
    await an.close()


def test_a_client_leaving_mid_stream_cancels_the_upstream_call(front: Front, sim: Sim) -> None:
    sim.configure(token_delay_ms=200)
    with httpx.Client(base_url=front.url, headers={"authorization": f"Bearer {front.token}"}) as client:
        with client.stream("POST", "/v1/chat/completions", json={
                "model": GPT, "stream": True, "messages": [{"role": "user", "content": "a b c d e f g h i j"}]}) as r:
            next(r.iter_lines())
    sim.wait_for(lambda s: s["in_flight"] == 0)
    assert sim.stats()["in_flight"] == 0
    with Client(front.daemon.socket) as c:
        assert c.status()["in_flight"] == 0


def test_bad_http_gets_a_clear_error_and_the_front_serves_on(front: Front) -> None:
    import socket as sk

    host, port = front.address.rsplit(":", 1)
    head = f"host: {front.address}\r\nauthorization: Bearer {front.token}\r\n".encode()
    for raw, status in ((b"GARBAGE\r\n\r\n", b"400"),
                        (b"GET /v1/models HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
                        (b"POST /v1/chat/completions HTTP/1.1\r\n" + head + b"content-length: 20000000\r\n\r\n"
                         + b"x" * 17_000_000, b"413")):
        with sk.create_connection((host, int(port))) as conn:
            try:
                conn.sendall(raw)
            except OSError:
                pass  # closed on us mid-send: the answer is already waiting
            assert conn.recv(100).split(b" ")[1] == status
    bad_json = httpx.post(front.url + "/v1/chat/completions", headers={"authorization": f"Bearer {front.token}"},
                          content=b"{not json")
    assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"]["message"]
    r = front.openai().chat.completions.create(model=GPT, messages=[{"role": "user", "content": "still here"}])
    assert r.choices[0].message.content == "Simulated reply to: still here"


_HTTP_AS_NOBODY = """
import os, sys, httpx
unix = httpx.Client(transport=httpx.HTTPTransport(uds=sys.argv[1]))  # imports done before giving up root
os.setgid(65534); os.setuid(65534)
r = unix.get("http://claifd/v1/models")
print(r.status_code)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (CI runs as root)")
def test_the_http_unix_socket_refuses_another_user(front: Front) -> None:
    import subprocess
    import sys

    # Open the file modes wide: only the peer-credential check stands in the way.
    for path in (Path(front.socket).parent.parent, Path(front.socket).parent):
        os.chmod(path, 0o755)
    os.chmod(front.socket, 0o666)
    out = subprocess.run([sys.executable, "-c", _HTTP_AS_NOBODY, front.socket], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "403", out.stderr
    with Client(front.daemon.socket) as c:
        c.config_set("server.allowed_uids", [65534])
    out = subprocess.run([sys.executable, "-c", _HTTP_AS_NOBODY, front.socket], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "200", out.stderr



@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_every_request_through_the_front_is_counted_and_logged(front: Front, wire: str, stream: bool) -> None:
    """The HTTP front runs on the socket's pipeline: its requests are in
    claif_requests_total, the latency (and, streamed, the first-token)
    histograms and the request log, like the socket's own."""
    h = {"authorization": f"Bearer {front.token}"}

    def ask(prompt: str, **body: object) -> httpx.Response:
        if wire == "openai":
            doc = {"model": GPT, "messages": [{"role": "user", "content": prompt}], "stream": stream, **body}
            return httpx.post(front.url + "/v1/chat/completions", json=doc, headers=h)
        doc = {"model": GPT, "max_tokens": 50, "messages": [{"role": "user", "content": prompt}], "stream": stream,
               **body}
        return httpx.post(front.url + "/v1/messages", json=doc, headers=h)

    assert ask("count me").status_code == 200  # a miss
    assert ask("count me").headers["x-claif-cache-status"] == "hit-exact"
    assert ask("count me", messages=[]).status_code == 400  # refused before it ran
    with Client(front.daemon.socket) as c:
        metrics = c.metrics()
        log = c.request_log(10)
    samples = samples_of(metrics)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    these = {"method": "complete", "provider": "openai", "model": "gpt-4o-mini", "front": wire}
    assert value("claif_requests_total", **these, outcome="ok") == 1
    assert value("claif_requests_total", **these, outcome="cached-exact") == 1
    assert value("claif_requests_total", method="complete", provider="", model="", outcome="bad_request",
                 front=wire) == 1
    assert value("claif_request_duration_seconds_count", **these) == 2  # (the refusal has no model)
    assert value("claif_time_to_first_token_seconds_count", provider="openai",
                 model="gpt-4o-mini") == (2 if stream else 0)
    assert [(row["model"], row["outcome"], row["output_tokens"], row["front"]) for row in log] == [
        ("gpt-4o-mini", "ok", 5, wire), ("gpt-4o-mini", "cached-exact", 5, wire), ("", "bad_request", 0, wire)]
    assert [row["prompt"] for row in log] == ["count me", "count me", None]  # (the refused one was never read)
    assert log[0]["answer"] == "Simulated reply to: count me" and log[1]["answer"] == log[0]["answer"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_one_sdk_call_costs_no_more_attempts_than_one_claif_ask(front: Front, sim: Sim, wire: str) -> None:
    """Against a 429 storm, an SDK with its default retries makes no more
    upstream attempts than the daemon's own policy (4), not 4 x 3: the
    daemon's answer says x-should-retry: false, with the upstream's wait."""
    with Client(front.daemon.socket) as c:
        c.config_set("retry.base_delay", 0.01)
        attempts = c.config_get("retry.max_attempts")["value"]
    sim.configure(errors=[429] * 50, retry_after=0.05)
    before = sim.stats()["requests"]
    if wire == "openai":
        sdk = openai.OpenAI(base_url=front.url + "/v1", api_key=front.token)  # its default: 2 retries
        with pytest.raises(openai.RateLimitError) as failed:
            sdk.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "storm"}])
    else:
        an = anthropic.Anthropic(base_url=front.url, api_key=front.token)
        with pytest.raises(anthropic.RateLimitError) as failed:  # type: ignore[assignment]
            an.messages.create(model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "storm"}])
    made = int(sim.stats()["requests"]) - before  # type: ignore[call-overload]
    assert made == attempts == 4, made
    headers = failed.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert headers["retry-after-ms"] == "50" and headers["retry-after"] == "1"
    time.sleep(0.1)  # the key's rest (the 429's retry-after) is over: the socket's call starts as fresh
    with Client(front.daemon.socket) as c:
        socket_before = sim.stats()["requests"]
        with pytest.raises(Exception):
            c.complete("storm again", model=GPT)
    assert int(sim.stats()["requests"]) - socket_before == attempts  # type: ignore[call-overload]


def _busy_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def _unix_get(path: str, url: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as unix:
        return unix.get("http://claifd" + url)


def test_a_port_clash_is_refused_and_never_takes_the_front_down(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    """A clash at start-up or in an edited file leaves the front's Unix
    socket serving, and status and health say what failed; `config set` to a
    port another process holds is refused with the reason."""
    holders = [_busy_port(), _busy_port()]
    busy = ["127.0.0.1:%d" % h.getsockname()[1] for h in holders]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true"), start=False)
    config = d.home / ".claif" / "config.json"
    config.parent.mkdir(exist_ok=True)

    def listen_in_file(address: str) -> None:
        config.write_text(json.dumps({"server": {"http": {"listen": address}}}))

    listen_in_file(busy[0])
    d.start()
    try:
        with Client(d.socket) as c:
            http = c.status()["http"]
            assert http["enabled"] and http["listen"] is None and "cannot listen on " + busy[0] in http["error"]
            check = next(x for x in c.health()["checks"] if x["name"] == "listeners")
            assert check["status"] == "warning" and busy[0] in check["detail"]
            assert _unix_get(http["socket"], "/health").status_code == 200
            for key in ("server.http.listen", "metrics.listen"):
                with pytest.raises(BadRequest, match="config not changed: cannot listen on .*in use"):
                    c.config_set(key, busy[1])
            assert c.config_get("metrics.listen")["value"] == ""
            listen_in_file(busy[1])
            c.config_reload()
            assert eventually(lambda: busy[1] in (c.status()["http"]["error"] or ""))
            assert _unix_get(http["socket"], "/health").status_code == 200
    finally:
        for holder in holders:
            holder.close()
    with Client(d.socket) as c:
        listen_in_file("127.0.0.1:0")
        c.config_reload()
        address = eventually(lambda: c.status()["http"]["listen"])
        assert c.status()["http"]["error"] is None
        assert next(x for x in c.health()["checks"] if x["name"] == "listeners")["status"] == "ok"
        token = (d.home / ".claif" / "http-token").read_text().strip()
    assert httpx.get(f"http://{address}/v1/models", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert d.stop() == 0


def test_a_repeated_request_is_served_from_its_bytes_until_the_config_changes(front: Front) -> None:
    """The hot path remembers a request's cache key by its bytes and steering
    headers; any config change forgets it (here: another namespace, where the
    same request is not cached yet)."""
    h = {"authorization": f"Bearer {front.token}"}
    body = {"model": "echo/x", "messages": [{"role": "user", "content": "hot"}]}

    def status(**headers: str) -> str:
        answer = httpx.post(front.url + "/v1/chat/completions", json=body, headers={**h, **headers})
        assert answer.status_code == 200
        return answer.headers["x-claif-cache-status"]

    assert [status(), status(), status()] == ["miss", "hit-exact", "hit-exact"]
    assert status(**{"x-claif-namespace": "elsewhere"}) == "miss"  # another header: another key
    with Client(front.daemon.socket) as c:
        c.config_set("cache.namespace", "moved")
    assert [status(), status()] == ["miss", "hit-exact"]
    with Client(front.daemon.socket) as c:
        c.config_set("cache.enabled", False)
    assert status() == "miss"


def test_what_cannot_cross_wires_is_refused_unless_dropped_on_purpose(front: Front, sim: Sim) -> None:
    """A field the target cannot take that would change its answer is a 400
    naming it, unless `x-claif-drop-params: true`; one that changes nothing
    (user, service_tier...) is dropped and named in x-claif-ignored."""
    h = {"authorization": f"Bearer {front.token}"}
    chat = {"model": CLAUDE, "messages": [{"role": "user", "content": "q"}]}
    refused = httpx.post(front.url + "/v1/chat/completions", headers=h, json={**chat, "seed": 7, "user": "u"})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("seed:")
    assert "x-claif-drop-params" in refused.json()["error"]["message"]
    dropped = httpx.post(front.url + "/v1/chat/completions", headers={**h, "x-claif-drop-params": "true"},
                         json={**chat, "seed": 7, "user": "u"})
    assert dropped.status_code == 200 and dropped.headers["x-claif-ignored"] == "seed,user"
    body = sim.requests()[-1]["body"]
    assert "seed" not in body and "user" not in body  # type: ignore[operator]
    harmless = httpx.post(front.url + "/v1/chat/completions", headers=h, json={**chat, "user": "u"})
    assert harmless.status_code == 200 and harmless.headers["x-claif-ignored"] == "user"
    # Repeated (the hot path): still refused without the header.
    assert httpx.post(front.url + "/v1/chat/completions", headers=h,
                      json={**chat, "seed": 7, "user": "u"}).status_code == 400
    # The Anthropic wire's top_k to an OpenAI model: the same rule.
    messages = {"model": GPT, "max_tokens": 9, "top_k": 5, "messages": [{"role": "user", "content": "k"}]}
    an = {"x-api-key": front.token, "anthropic-version": "2023-06-01"}
    assert httpx.post(front.url + "/v1/messages", headers=an, json=messages).status_code == 400
    kept = httpx.post(front.url + "/v1/messages", headers={**an, "x-claif-drop-params": "1"}, json=messages)
    assert kept.status_code == 200 and kept.headers["x-claif-ignored"] == "top_k"
    assert "top_k" not in sim.requests()[-1]["body"]  # type: ignore[operator]
