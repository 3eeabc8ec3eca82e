"""The simulator's streams: each provider's server-sent events, a word
per event (or `chunk_chars` pieces), with the faults that cut them short
or break them."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import anyio.abc
import h11

from .answers import _answer, _openai_answer, _openai_usage, anthropic_usage, tool_call
from .exchange import _ClientGone, _Exchange
from .faults import SimState


def _pieces(words: list[str], chunk_chars: int | None) -> list[str]:
    """What a stream sends: a word per event, or `chunk_chars`-sized cuts."""
    if not chunk_chars:
        return words
    text = "".join(words)
    return [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)]

async def _stream_words(ex: _Exchange, words: list[str], state: SimState, emit: Any, on_error: Any) -> None:
    faults = state.faults
    for i, word in enumerate(_pieces(words, faults.chunk_chars)):
        if faults.stream_cut_after is not None and i >= faults.stream_cut_after:
            await anyio.aclose_forcefully(ex.stream)
            raise _ClientGone  # counted as a disconnect: the connection is gone either way
        if faults.stream_error_after is not None and i >= faults.stream_error_after:
            await on_error()
            return
        if faults.token_delay_ms and i:
            # A plain sleep: the next write notices a client that left, and
            # reading between tokens would cost the sim CPU that benchmarks
            # with hundreds of streams need.
            await anyio.sleep(faults.token_delay_ms / 1000)
        await emit(word)

async def _anthropic_stream(ex: _Exchange, body: dict[str, Any], state: SimState) -> None:
    model = body["model"]
    words, truncated = _answer(body, body["max_tokens"])
    stop_reason = "max_tokens" if truncated else "end_turn"
    usage_in = anthropic_usage(body, state)
    msg_id = f"msg_sim_{next(state.ids):08d}"
    await ex.start_sse()
    await ex.sse({"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage_in, "output_tokens": 1},
    }}, "message_start")
    call = tool_call(body)
    if call is not None:
        await _anthropic_tool_stream(ex, call, state)
        return
    await ex.sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")
    await ex.sse({"type": "ping"}, "ping")

    split = state.faults.chunk_chars is not None

    async def emit(word: str) -> None:
        await ex.sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
                     "content_block_delta", split)

    errored = False

    async def on_error() -> None:
        nonlocal errored
        errored = True
        await ex.sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    await _stream_words(ex, words, state, emit, on_error)
    if not errored:
        await ex.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        await ex.sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                      "usage": {"output_tokens": len(words)}}, "message_delta")
        await ex.sse({"type": "message_stop"}, "message_stop")
    await ex.send(h11.EndOfMessage())

async def _anthropic_tool_stream(ex: _Exchange, call: tuple[str, dict[str, Any]], state: SimState) -> None:
    """A tool_use block: its input as two input_json_delta pieces."""
    arguments = json.dumps(call[1])
    await ex.sse({"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": f"toolu_sim_{next(state.ids):08d}", "name": call[0], "input": {}}},
        "content_block_start")
    await ex.sse({"type": "ping"}, "ping")
    for piece in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
        await ex.sse({"type": "content_block_delta", "index": 0,
                      "delta": {"type": "input_json_delta", "partial_json": piece}}, "content_block_delta")
    await ex.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    await ex.sse({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                  "usage": {"output_tokens": 1}}, "message_delta")
    await ex.sse({"type": "message_stop"}, "message_stop")
    await ex.send(h11.EndOfMessage())

async def _openai_stream(ex: _Exchange, body: dict[str, Any], state: SimState) -> None:
    model = body["model"]
    words, finish = _openai_answer(body)
    created = int(time.time())
    cid = f"chatcmpl-sim{next(state.ids):08d}"
    usage = _openai_usage(body, words, state)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            doc["usage"] = None
        return doc

    await ex.start_sse()
    await ex.sse(chunk({"role": "assistant", "content": "", "refusal": None}))

    call = tool_call(body)
    if call is not None:  # the call, then its arguments in two pieces
        arguments = json.dumps(call[1])
        await ex.sse(chunk({"tool_calls": [{"index": 0, "id": f"call_sim{next(state.ids):08d}", "type": "function",
                                            "function": {"name": call[0], "arguments": ""}}]}))
        for piece in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
            await ex.sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        finish, usage = "tool_calls", _openai_usage(body, ["x"], state)
    elif not await _stream_openai_words(ex, words, state, chunk):
        await ex.send(h11.EndOfMessage())
        return
    await ex.sse(chunk({}, finish))
    if include_usage:
        await ex.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "system_fingerprint": None, "choices": [], "usage": usage})
    await ex.sse("[DONE]")
    await ex.send(h11.EndOfMessage())

async def _stream_openai_words(ex: _Exchange, words: list[str], state: SimState, chunk: Any) -> bool:
    """The text, a chunk per word; False when a stream_error_after fault ended it with an error."""
    split = state.faults.chunk_chars is not None

    async def emit(word: str) -> None:
        await ex.sse(chunk({"content": word}), split=split)

    errored = False

    async def on_error() -> None:
        nonlocal errored
        errored = True
        await ex.sse({"error": {"message": "simulated mid-stream failure", "type": "server_error", "code": None}})

    await _stream_words(ex, words, state, emit, on_error)
    return not errored

async def _malformed(ex: _Exchange, kind: str, doc: dict[str, Any], content_key: str, usage_key: str) -> None:
    """Answer 200 with something a careful client must not take as an answer."""
    if kind == "wrong_types":
        doc[content_key] = "a string where a list belongs"
        doc[usage_key] = "lots"
    elif kind == "bad_usage":  # well formed but for the token counts
        doc[usage_key] = {"input_tokens": "lots", "output_tokens": -1, "prompt_tokens": "lots", "completion_tokens": -1}
    elif kind == "empty":
        if content_key == "content":
            doc["content"] = []
        else:
            doc["choices"][0]["message"]["content"] = ""
    elif kind == "huge":
        big = "x" * (20 * 1024 * 1024)
        if content_key == "content":
            doc["content"] = [{"type": "text", "text": big}]
        else:
            doc["choices"][0]["message"]["content"] = big
    elif kind == "html":
        await ex.respond(200, doc, content_type="text/html; charset=utf-8")
        return
    elif kind == "not_json":
        await ex.respond(200, b"<html><body>Bad gateway</body></html>", content_type="application/json")
        return
    await ex.respond(200, doc)
