"""The thin client's SDK-shaped facades, field by field against the
official SDKs' own objects for the same upstream (the simulator)."""

from __future__ import annotations

import json

import anthropic
import anyio
import openai
import pytest

import claif_client
from claif_client import AsyncClient, Client, InvalidRequest

from .conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, DaemonProcess, Sim

TOOLS_OA = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
TOOLS_AN = [{"name": "lookup", "input_schema": {"type": "object"}}]
VOLATILE = {"id", "created"}  # made anew by every upstream call


def same(ours: dict, theirs: dict) -> None:  # type: ignore[type-arg]
    a = {k: v for k, v in ours.items() if k not in VOLATILE}
    b = {k: v for k, v in theirs.items() if k not in VOLATILE}
    assert a == b


def strip_call_ids(doc: dict) -> dict:  # type: ignore[type-arg]
    for choice in doc.get("choices", []):
        for call in choice["message"].get("tool_calls", []):
            call.pop("id")  # and the arguments compared as JSON, not as spelt
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    for block in doc.get("content", []):
        block.pop("id", None)
    return doc


@pytest.mark.parametrize("tools", [None, TOOLS_OA])
def test_chat_completion_matches_the_openai_sdk(upstream_daemon: DaemonProcess, sim: Sim, tools: object) -> None:
    sdk = openai.OpenAI(base_url=sim.url + "/v1", api_key=OPENAI_TEST_KEY, max_retries=0)
    args = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is up?"}]}
    if tools:
        args["tools"] = tools
    theirs = sdk.chat.completions.create(**args)  # type: ignore[call-overload]
    with Client(upstream_daemon.socket) as c:
        ours = c.chat.completions.create(**args)
    assert ours.id.startswith("chatcmpl-") and isinstance(ours.created, int) and ours.model == "gpt-4o-mini"
    same(strip_call_ids(ours.model_dump(exclude_none=True)), strip_call_ids(theirs.model_dump(exclude_none=True)))
    if tools:
        assert ours.choices[0].message.tool_calls[0].function.name == "lookup"
        assert ours.choices[0].finish_reason == "tool_calls" and ours.choices[0].message.content is None
    else:
        assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens and ours.cached is False


def test_chat_stream_matches_the_openai_sdk(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sdk = openai.OpenAI(base_url=sim.url + "/v1", api_key=OPENAI_TEST_KEY, max_retries=0)
    args = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "stream this"}], "stream": True,
            "stream_options": {"include_usage": True}}
    theirs = list(sdk.chat.completions.create(**args))  # type: ignore[call-overload]
    with Client(upstream_daemon.socket) as c:
        ours = list(c.chat.completions.create(**args))
    assert len({ch.id for ch in ours}) == 1 and ours[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in ours if ch.choices)
    assert text == "".join(ch.choices[0].delta.content or "" for ch in theirs if ch.choices)
    assert ours[-1].usage.model_dump() == {k: v for k, v in theirs[-1].usage.model_dump().items() if v is not None}
    assert [ch.choices[0].finish_reason for ch in ours if ch.choices][-1] == "stop"


@pytest.mark.parametrize("tools", [None, TOOLS_AN])
def test_message_matches_the_anthropic_sdk(upstream_daemon: DaemonProcess, sim: Sim, tools: object) -> None:
    sdk = anthropic.Anthropic(base_url=sim.url, api_key=ANTHROPIC_TEST_KEY, max_retries=0)
    args = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "What is up?"}]}
    if tools:
        args["tools"] = tools
    theirs = sdk.messages.create(**args)  # type: ignore[call-overload]
    with Client(upstream_daemon.socket) as c:
        ours = c.messages.create(**args)
        with c.messages.stream(**args) as s:
            streamed_text = "".join(s.text_stream)
            final = s.get_final_message()
    assert ours.id and ours.type == "message" and ours.role == "assistant" and ours.stop_sequence is None
    same(strip_call_ids(ours.model_dump(exclude_none=True)), strip_call_ids(theirs.model_dump(exclude_none=True)))
    assert ours.usage.cache_read_input_tokens == 0 == theirs.usage.cache_read_input_tokens
    if tools:
        assert ours.content[0].type == "tool_use" and ours.content[0].input == {"query": "What is up?"}
        assert ours.stop_reason == "tool_use" and final.stop_reason == "tool_use"
    else:
        assert streamed_text == theirs.content[0].text == final.content[0].text


def test_parameters_are_honoured_or_refused(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}], seed=3,
                                  response_format={"type": "json_object"}, user="u", stop="END",
                                  max_completion_tokens=20, extra_body={"service_tier": "auto"})
        body = sim.requests()[-1]["body"]
        assert (body["seed"], body["user"], body["stop"], body["max_tokens"], body["service_tier"]) == (  # type: ignore[index]
            3, "u", ["END"], 20, "auto")
        before = sim.stats()["requests"]
        two = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}], n=2)
        assert [ch.index for ch in two.choices] == [0, 1] and sim.stats()["requests"] == before + 2
        assert two.usage.completion_tokens == 2 * 4
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}], n=2)
        assert sim.stats()["requests"] == before + 2  # both choices from the cache
        with pytest.raises(InvalidRequest, match="n > 1 with stream"):
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}], n=2,
                                      stream=True)
        with pytest.raises(InvalidRequest, match="extra_headers"):
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}],
                                      extra_headers={"x": "y"})
        with pytest.raises(InvalidRequest, match="max_tokens"):
            c.messages.create(model="claude-x", messages=[{"role": "user", "content": "p"}])
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}],
                                      cache="bypass", complexity_hint="simple")
        assert r.cached is False and sim.requests()[-1]["body"]["max_tokens"] == 1024  # type: ignore[index]


def test_errors_carry_the_sdks_names(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.config_set("retry.max_attempts", 1)
        for status, cls in ((400, claif_client.BadRequestError), (401, claif_client.AuthenticationError),
                            (404, claif_client.NotFoundError), (429, claif_client.RateLimitError),
                            (529, claif_client.InternalServerError)):
            sim.configure(errors=[status])
            with pytest.raises(cls) as caught:
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"s{status}"}])
            assert caught.value.status_code == status and isinstance(caught.value, claif_client.ClaifError)
        c.config_set("client.timeout", 0.3)
        sim.configure(latency_ms=2000)
        with pytest.raises(claif_client.APITimeoutError):
            c.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "slow"}])
        sim.configure(latency_ms=0)


@pytest.mark.anyio
async def test_async_facades(upstream_daemon: DaemonProcess) -> None:
    async with AsyncClient(upstream_daemon.socket) as c:
        r = await c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
        assert r.choices[0].message.content == "Simulated reply to: a"
        chunks = [ch async for ch in await c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], stream=True)]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Simulated reply to: b"
        m = await c.messages.create(model="claude-x", max_tokens=20, messages=[{"role": "user", "content": "c"}])
        assert m.content[0].text == "Simulated reply to: c"
        async with c.messages.stream(model="claude-x", max_tokens=20,
                                     messages=[{"role": "user", "content": "d"}]) as s:
            assert "".join([t async for t in s.text_stream]) == "Simulated reply to: d"
        await anyio.sleep(0)
