"""Answers in each API's own shape, from the daemon's `CompletionResponse`:
whole (a Chat Completion, a Message) and streamed (OpenAI's
`chat.completion.chunk`s, Anthropic's event sequence). Written once, for the
HTTP front's sinks and the client's OpenAI-compatible facade.

The simulator (claif_sim) writes the providers' shapes on its own, on
purpose: it is the oracle the daemon's translations are tested against, and
a shape shared with it could not catch a mistake in the shape.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .protocol import CompletionResponse, Usage
from .wire import FINISH_REASONS

__all__ = [
    "anthropic_blocks", "anthropic_response", "anthropic_stream_end", "anthropic_stream_start",
    "anthropic_text_delta", "anthropic_text_start", "anthropic_block_stop", "openai_choices", "openai_chunk",
    "openai_finish", "openai_response", "openai_usage", "openai_usage_chunk", "tool_calls_of",
]


# ------------------------------------------------------------------ whole


def tool_calls_of(response: CompletionResponse) -> list[dict[str, Any]]:
    return [
        {"id": b.get("id", ""), "type": "function",
         "function": {"name": b.get("name", ""), "arguments": msgspec.json.encode(b.get("input", {})).decode()}}
        for b in response.content if b.get("type") == "tool_use"
    ]


def openai_response(response: CompletionResponse, model: str, rid: str, created: int) -> dict[str, Any]:
    calls = tool_calls_of(response)
    message: dict[str, Any] = {"role": "assistant", "content": response.text or (None if calls else ""),
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = response.usage
    return {
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(response.stop_reason or "end_turn", "stop")}],
        "usage": openai_usage_of(usage),
    }


def openai_usage_of(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: prompt_tokens counts the prompt-cache tokens too
    (`Usage.input_tokens` does not, as Anthropic's), cached_tokens those
    read; the prompt cache's two counts are also given by their Anthropic
    names, as other gateways do."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    doc: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": usage.output_tokens,
                           "total_tokens": prompt + usage.output_tokens}
    if usage.cache_read_input_tokens or usage.cache_creation_input_tokens:
        doc["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_input_tokens}
        doc["cache_read_input_tokens"] = usage.cache_read_input_tokens
        doc["cache_creation_input_tokens"] = usage.cache_creation_input_tokens
    return doc


def anthropic_blocks(response: CompletionResponse) -> list[dict[str, Any]]:
    blocks = [b for b in response.content if b.get("type") in ("text", "tool_use", "thinking")]
    if not blocks and response.text:
        blocks = [{"type": "text", "text": response.text}]
    return blocks


def anthropic_response(response: CompletionResponse, model: str, rid: str) -> dict[str, Any]:
    usage = response.usage
    return {
        "id": rid, "type": "message", "role": "assistant", "model": model,
        "content": anthropic_blocks(response), "stop_reason": response.stop_reason or "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                  "cache_read_input_tokens": usage.cache_read_input_tokens,
                  "cache_creation_input_tokens": usage.cache_creation_input_tokens},
    }


def openai_choices(responses: list[CompletionResponse], model: str, rid: str, created: int) -> dict[str, Any]:
    """One Chat Completion of n choices (usage summed)."""
    doc = openai_response(responses[0], model, rid, created)
    for i, response in enumerate(responses[1:], start=1):
        extra = openai_response(response, model, rid, created)
        choice = extra["choices"][0]
        choice["index"] = i
        doc["choices"].append(choice)
    if len(responses) > 1:
        doc["usage"] = openai_usage(responses)
    return doc


def openai_usage(responses: list[CompletionResponse]) -> dict[str, Any]:
    """The usage of n choices, summed."""
    return openai_usage_of(Usage(
        input_tokens=sum(r.usage.input_tokens for r in responses),
        output_tokens=sum(r.usage.output_tokens for r in responses),
        cache_read_input_tokens=sum(r.usage.cache_read_input_tokens for r in responses),
        cache_creation_input_tokens=sum(r.usage.cache_creation_input_tokens for r in responses),
    ))


# ------------------------------------------------------------ streamed: OpenAI


def openai_chunk(rid: str, created: int, model: str, index: int, delta: dict[str, Any],
                 finish: str | None = None, usage_field: bool = False) -> dict[str, Any]:
    """One `chat.completion.chunk` of choice `index` (`usage: null` on each
    chunk when the caller asked for usage: the SDKs expect the field)."""
    doc: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None,
                           "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage_field:
        doc["usage"] = None
    return doc


def openai_finish(response: CompletionResponse) -> tuple[list[dict[str, Any]], str]:
    """The deltas a streamed choice ends with (its tool calls, if any) and its finish reason."""
    calls = tool_calls_of(response)
    deltas = [{"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}] if calls else []
    return deltas, FINISH_REASONS.get(response.stop_reason or "end_turn", "stop")


def openai_usage_chunk(rid: str, created: int, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    """The last chunk of a stream that asked for usage: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": [], "usage": usage}


# --------------------------------------------------------- streamed: Anthropic

# Each event is (name, data): the SSE `event:` line and its JSON.
Event = tuple[str, dict[str, Any]]


def anthropic_stream_start(rid: str, model: str) -> Event:
    return "message_start", {"type": "message_start", "message": {
        "id": rid, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}


def anthropic_text_start(index: int) -> list[Event]:
    return [("content_block_start", {"type": "content_block_start", "index": index,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"})]


def anthropic_text_delta(index: int, text: str) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index,
                                   "delta": {"type": "text_delta", "text": text}}


def anthropic_block_stop(index: int) -> Event:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def anthropic_stream_end(response: CompletionResponse, index: int) -> list[Event]:
    """What follows the text: each tool_use block (from `index` on), the stop
    reason with the usage, and the end."""
    events: list[Event] = []
    for block in anthropic_blocks(response):
        if block.get("type") != "tool_use":
            continue
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": block.get("id", ""), "name": block.get("name", ""), "input": {}}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
            "type": "input_json_delta", "partial_json": msgspec.json.encode(block.get("input", {})).decode()}}))
        events.append(anthropic_block_stop(index))
        index += 1
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": response.stop_reason or "end_turn",
                                               "stop_sequence": None},
                                     "usage": {"input_tokens": response.usage.input_tokens,
                                               "cache_creation_input_tokens":
                                                   response.usage.cache_creation_input_tokens,
                                               "cache_read_input_tokens": response.usage.cache_read_input_tokens,
                                               "output_tokens": response.usage.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
