"""Structured output across wires (issue 29): OpenAI's response_format and
Anthropic's output_format for any model, through the official SDKs. To an
Anthropic model it is a forced tool whose input schema is the wanted schema,
and its input comes back as the message content; `strict` answers are checked
against the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

from claif_client import Client
from claifd import structured

from .conftest import Sim, sim_env
from .test_front import CLAUDE, GPT, WEATHER_OPENAI, Front


class City(pydantic.BaseModel):
    name: str
    population: int
    tags: list[str]
    capital: bool


SCHEMA = {"name": "city", "strict": True, "schema": {**City.model_json_schema(), "additionalProperties": False}}


@pytest.fixture
def front(daemon_factory, sim: Sim) -> Iterator[Front]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    yield Front(d)
    assert d.stop() == 0


def _last(sim: Sim) -> dict[str, Any]:
    return sim.requests()[-1]["body"]  # type: ignore[return-value]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_json_schema_to_claude_is_a_forced_tool_and_comes_back_as_content(front: Front, sim: Sim,
                                                                         stream: bool) -> None:
    oa = front.openai()
    messages = [{"role": "user", "content": f"tell me of Paris {stream}"}]
    if stream:
        pieces = [c.choices[0].delta.content or "" for c in oa.chat.completions.create(
            model=CLAUDE, messages=messages, stream=True,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": SCHEMA})]  # type: ignore[typeddict-item]
        assert len([p for p in pieces if p]) >= 2  # streamed as it came, not at the end
        text = "".join(pieces)
    else:
        answer = oa.chat.completions.create(model=CLAUDE, messages=messages,  # type: ignore[arg-type]
                                            response_format={"type": "json_schema", "json_schema": SCHEMA})  # type: ignore[typeddict-item]
        assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
        text = answer.choices[0].message.content or ""
    city = City.model_validate_json(text)
    assert city.name == f"tell me of Paris {stream}"
    body = _last(sim)
    assert body["tools"] == [{"name": structured.TOOL, "description": "Give the answer, as city: always answer by "
                              "calling this tool.", "input_schema": SCHEMA["schema"]}]
    assert body["tool_choice"] == {"type": "tool", "name": structured.TOOL}
    assert "response_format" not in body
    headers = httpx.post(front.url + "/v1/chat/completions", headers={"authorization": f"Bearer {front.token}"},
                         json={"model": CLAUDE, "messages": messages,
                               "response_format": {"type": "json_schema", "json_schema": SCHEMA}}).headers
    assert "x-claif-ignored" not in headers


def test_the_sdks_parse_helper_and_json_object(front: Front, sim: Sim) -> None:
    oa = front.openai()
    parsed = oa.chat.completions.parse(model=CLAUDE, messages=[{"role": "user", "content": "Lyon"}],
                                       response_format=City)
    assert parsed.choices[0].message.parsed == City(name="Lyon", population=1, tags=["Lyon"], capital=True)
    answer = oa.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "json please"}],
                                        response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content or "") == {"query": "json please"}  # (any JSON object)
    assert _last(sim)["tools"][0]["input_schema"] == {"type": "object"}
    # Again: an exact hit (the format is part of the key), and a plain request is not served it.
    again = httpx.post(front.url + "/v1/chat/completions", headers={"authorization": f"Bearer {front.token}"},
                       json={"model": CLAUDE, "messages": [{"role": "user", "content": "json please"}],
                             "response_format": {"type": "json_object"}})
    assert again.headers["x-claif-cache-status"] == "hit-exact"
    plain = oa.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "json please"}])
    assert plain.choices[0].message.content == "Simulated reply to: json please"


def test_with_tools_of_its_own_the_model_may_call_them(front: Front, sim: Sim) -> None:
    answer = front.openai().chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "weather?"}], tools=WEATHER_OPENAI,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": SCHEMA})  # type: ignore[typeddict-item]
    body = _last(sim)
    assert [t["name"] for t in body["tools"]] == ["get_weather", structured.TOOL]
    assert body["tool_choice"] == {"type": "any"}
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]


def test_anthropic_output_format_to_either_provider(front: Front, sim: Sim) -> None:
    doc = {"max_tokens": 200, "messages": [{"role": "user", "content": "Nice"}],
           "output_format": {"type": "json_schema", "schema": SCHEMA["schema"]}}
    h = {"x-api-key": front.token, "anthropic-version": "2023-06-01"}
    to_gpt = httpx.post(front.url + "/v1/messages", headers=h, json={**doc, "model": GPT}).json()
    assert City.model_validate_json(to_gpt["content"][0]["text"]).name == "Nice"
    assert _last(sim)["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "output", "schema": SCHEMA["schema"], "strict": True}}
    to_claude = httpx.post(front.url + "/v1/messages", headers=h, json={**doc, "model": CLAUDE}).json()
    assert to_claude["stop_reason"] == "end_turn" and to_claude["content"][0]["type"] == "text"
    assert City.model_validate_json(to_claude["content"][0]["text"]).name == "Nice"
    assert _last(sim)["tool_choice"] == {"type": "tool", "name": structured.TOOL}
    bad = httpx.post(front.url + "/v1/messages", headers=h, json={**doc, "model": GPT, "output_format": {"type": "x"}})
    assert bad.status_code == 400 and "output_format" in bad.text


def test_strict_answers_are_checked_against_the_schema(front: Front) -> None:
    """A strict schema the answer breaks (the simulator answers 1 where at
    most 0 is allowed) is an error naming where, never a wrong answer."""
    impossible = {"name": "n", "strict": True, "schema": {"type": "object", "properties": {
        "n": {"type": "integer", "maximum": 0}}, "required": ["n"]}}
    for model in (CLAUDE, GPT):
        with pytest.raises(openai.APIStatusError, match="does not match response_format's schema at n"):
            front.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "n"}],
                                                   response_format={"type": "json_schema", "json_schema": impossible})  # type: ignore[typeddict-item]
    # Not strict: served as the model gave it.
    loose = {**impossible, "strict": False}
    answer = front.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "n"}],
                                                    response_format={"type": "json_schema", "json_schema": loose})  # type: ignore[typeddict-item]
    assert json.loads(answer.choices[0].message.content or "") == {"n": 1}
    with Client(front.daemon.socket) as c:
        with pytest.raises(Exception, match="response_format.type must be one of"):
            c.complete("x", model=CLAUDE, extra={"response_format": {"type": "yaml"}})
