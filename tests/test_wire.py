"""wire.py on its own: the translations between the two wire formats and
the daemon's shape, both ways (the HTTP front and the providers use them)."""

from __future__ import annotations

from claif_client.protocol import CompletionResponse, Message, Usage
from claif_client.shapes import anthropic_response, openai_response
from claif_client.wire import (
    content_to_anthropic,
    messages_to_openai,
    openai_request,
    tool_choice_to_anthropic,
    tool_choice_to_openai,
    tools_to_anthropic,
    tools_to_openai,
)

PNG = "iVBORw0KGgo="


def test_image_parts_both_ways() -> None:
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
    blocks = content_to_anthropic(parts)
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    back = messages_to_openai(None, [Message(role="user", content=blocks)])
    assert back == [{"role": "user", "content": parts}]


def test_tools_and_choices_round_trip() -> None:
    anthropic = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    openai = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    assert tools_to_openai(anthropic) == openai and tools_to_anthropic(openai) == anthropic
    assert tools_to_openai(openai) == openai and tools_to_anthropic(anthropic) == anthropic  # already theirs
    for oa, an in (("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
                   ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"})):
        assert tool_choice_to_anthropic(oa) == an and tool_choice_to_openai(an) == oa


def test_parallel_tool_results_become_one_user_turn() -> None:
    ask = openai_request({"model": "m", "messages": [
        {"role": "developer", "content": "rules"}, {"role": "user", "content": "two things"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "ra"}, {"role": "tool", "tool_call_id": "b", "content": "rb"}]})
    request = ask.request
    assert request.system == "rules" and len(request.messages) == 3
    assert request.messages[2].content == [{"type": "tool_result", "tool_use_id": "a", "content": "ra"},
                                           {"type": "tool_result", "tool_use_id": "b", "content": "rb"}]
    assert messages_to_openai(request.system, request.messages)[3:] == [
        {"role": "tool", "tool_call_id": "a", "content": "ra"}, {"role": "tool", "tool_call_id": "b", "content": "rb"}]


def test_responses_in_both_shapes() -> None:
    response = CompletionResponse(text="", model="anthropic/m", stop_reason="tool_use",
                                  content=[{"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}],
                                  usage=Usage(input_tokens=5, output_tokens=2, cache_read_input_tokens=3))
    oa = openai_response(response, "m", "id1", 7)
    assert oa["choices"][0]["finish_reason"] == "tool_calls" and oa["choices"][0]["message"]["content"] is None
    assert oa["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{\"x\":1}"}
    # OpenAI's prompt_tokens count the cached ones (ours, as Anthropic's, do not).
    assert oa["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10,
                           "prompt_tokens_details": {"cached_tokens": 3}, "cache_read_input_tokens": 3,
                           "cache_creation_input_tokens": 0}
    an = anthropic_response(response, "m", "id2")
    assert an["stop_reason"] == "tool_use" and an["content"] == response.content
    assert an["usage"]["cache_read_input_tokens"] == 3
