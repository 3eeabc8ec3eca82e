"""OpenAI's Responses API through the HTTP front (issue 29), for any model,
with the official SDK: input as a string or items, instructions, function
tools and their calls, the event stream, previous_response_id backed by
sessions, GET and DELETE /v1/responses/{id}."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from claif_client import Client

from .conftest import Sim, sim_env
from .test_front import CLAUDE, GPT, Front
from .test_monitoring import samples_of

WEATHER = [{"type": "function", "name": "get_weather", "description": "the weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
def front(daemon_factory, sim: Sim) -> Iterator[Front]:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SERVER__HTTP__ENABLED="true", CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0"))
    yield Front(d)
    assert d.stop() == 0


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_create_plain_and_streamed(front: Front, sim: Sim, model: str) -> None:
    oa = front.openai()
    answer = oa.responses.create(model=model, input="hello there", instructions="be brief")
    assert answer.output_text == "Simulated reply to: hello there" and answer.status == "completed"
    assert answer.id.startswith("resp_") and answer.usage is not None and answer.usage.output_tokens == 5
    body = sim.requests()[-1]["body"]
    if model == CLAUDE:
        assert body["system"] == "be brief"  # type: ignore[index]
    else:
        assert body["messages"][0] == {"role": "system", "content": "be brief"}  # type: ignore[index]
    events = list(oa.responses.create(model=model, input="stream me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == "Simulated reply to: stream me"
    assert events[-1].response.output_text == text  # type: ignore[union-attr]
    with oa.responses.stream(model=model, input="helper stream") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Simulated reply to: helper stream"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_function_tools_and_their_calls(front: Front, sim: Sim, stream: bool) -> None:
    oa = front.openai()
    if stream:
        events = list(oa.responses.create(model=CLAUDE, input="weather in Paris?", tools=WEATHER, stream=True))  # type: ignore[arg-type]
        kinds = [e.type for e in events]
        assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
        answer = events[-1].response  # type: ignore[union-attr]
    else:
        answer = oa.responses.create(model=CLAUDE, input="weather in Paris?", tools=WEATHER)  # type: ignore[arg-type]
    calls = [item for item in answer.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "weather in Paris?"}
    assert sim.requests()[-1]["body"]["tools"][0]["input_schema"] == WEATHER[0]["parameters"]  # type: ignore[index]
    # The result goes back as items; the model answers from it.
    follow = oa.responses.create(model=CLAUDE, tools=WEATHER, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    assert follow.output_text == "Simulated reply to: sunny, 21 C"
    sent = sim.requests()[-1]["body"]["messages"]  # type: ignore[index]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[2]["content"][0]["type"] == "tool_result"


def test_previous_response_id_continues_the_conversation_stored_as_a_session(front: Front, sim: Sim) -> None:
    oa = front.openai()
    first = oa.responses.create(model=GPT, input="my name is Ada", instructions="be brief")
    second = oa.responses.create(model=GPT, input="what is my name?", previous_response_id=first.id)
    assert [m["content"] for m in sim.requests()[-1]["body"]["messages"]] == [  # type: ignore[index]
        "my name is Ada", "Simulated reply to: my name is Ada", "what is my name?"]  # (instructions not carried)
    # A branch from the first, and a chain of three.
    oa.responses.create(model=GPT, input="branch", previous_response_id=first.id)
    assert len(sim.requests()[-1]["body"]["messages"]) == 3  # type: ignore[index,arg-type]
    oa.responses.create(model=CLAUDE, input="third", previous_response_id=second.id)
    assert len(sim.requests()[-1]["body"]["messages"]) == 5  # type: ignore[index,arg-type]
    # Stored: retrieved as it was answered, across a restart too; deleted.
    assert oa.responses.retrieve(second.id).output_text == second.output_text
    front.daemon.stop()
    front.daemon.start()
    again = Front(front.daemon).openai()
    assert again.responses.retrieve(first.id).output_text == "Simulated reply to: my name is Ada"
    with Client(front.daemon.socket) as c:
        assert c.session_get(first.id)["metadata"]["kind"] == "response"
    again.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        again.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        again.responses.create(model=GPT, input="x", previous_response_id=first.id)
    unstored = again.responses.create(model=GPT, input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        again.responses.retrieve(unstored.id)


def test_structured_output_and_what_cannot_be_translated(front: Front) -> None:
    oa = front.openai()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    answer = oa.responses.create(model=CLAUDE, input="json me", text={"format": {  # type: ignore[arg-type]
        "type": "json_schema", "name": "a", "schema": schema, "strict": True}})
    assert json.loads(answer.output_text) == {"answer": "json me"}
    h = {"authorization": f"Bearer {front.token}"}
    for doc, field in (({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
                       ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
                       ({"input": 5}, "input"), ({"input": "x", "frobnicate": 1}, "frobnicate")):
        bad = httpx.post(front.url + "/v1/responses", headers=h, json={"model": GPT, **doc})
        assert bad.status_code == 400 and field in bad.json()["error"]["message"], (doc, bad.text)


def test_counted_under_the_responses_front(front: Front) -> None:
    front.openai().responses.create(model=GPT, input="count me")
    with Client(front.daemon.socket) as c:
        samples = samples_of(c.metrics())
        log = c.request_log(5)
    assert samples[("claif_requests_total", (("front", "responses"), ("method", "complete"), ("model", "gpt-4o-mini"),
                                             ("outcome", "ok"), ("provider", "openai")))] == 1
    assert log[-1]["front"] == "responses"


def test_a_stream_failing_midway_ends_with_an_error_event(front: Front, sim: Sim) -> None:
    sim.configure(stream_error_after=2)
    events = list(front.openai().responses.create(model=CLAUDE, input="one two three four five six", stream=True))
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "error" and events[-1].message  # type: ignore[union-attr]
    assert events[-1].sequence_number == len(events) - 1
