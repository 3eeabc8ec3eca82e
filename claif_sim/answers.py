"""What the simulator answers, as each provider writes it: the reply text
(a pure function of the request), tool calls, token counts, embeddings,
and the whole Anthropic Message and OpenAI Chat Completion documents.

These are written here on their own, not shared with the daemon's shapes
(claif_client/shapes.py): the simulator is the oracle the daemon's
translations are tested against."""

from __future__ import annotations

import hashlib
import json
import re
import time
import zlib
from typing import Any

from .faults import SimState
from .schemas import instance

_WORDS = re.compile(r"\S+\s*")

_ANTHROPIC_MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]

_OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}

def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""

def _tool_result_text(message: Any) -> str | None:
    """The text of a tool result turn (OpenAI `tool` message, or an Anthropic
    user turn of tool_result blocks); None for any other turn."""
    if not isinstance(message, dict):
        return None
    if message.get("role") == "tool":
        return _text_of(message.get("content"))
    content = message.get("content")
    if message.get("role") == "user" and isinstance(content, list) and content and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return " ".join(_text_of(b.get("content")) for b in content)
    return None

def reply_text(messages: list[dict[str, Any]]) -> str:
    """To a tool result: "Simulated reply to: " and the result; else the same and the last user turn."""
    result = _tool_result_text(messages[-1]) if messages else None
    if result is not None:
        return "Simulated reply to: " + result
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    return "Simulated reply to: " + (_text_of(last_user.get("content")) if last_user else "")

def tool_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(tool name, input) when the answer is a tool call: the request offers
    tools, does not forbid them, and its last turn is a user's question (not
    a tool result). The tool is the one tool_choice names, else the first;
    the input is valid against the tool's schema, its strings the question
    ({"query": the question} for a tool with no properties)."""
    tools = body.get("tools")
    messages = body.get("messages") or []
    if not isinstance(tools, list) or not tools or not messages or _tool_result_text(messages[-1]) is not None:
        return None
    choice = body.get("tool_choice")
    if choice in ("none", {"type": "none"}):
        return None
    schemas: dict[str, Any] = {}
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise TypeError(f"tools[{i}] must be an object")
        if t.get("type") == "function":
            fn = t.get("function")
            if not isinstance(fn, dict):
                raise TypeError(f"tools[{i}].function must be an object")
            schemas.setdefault(str(fn.get("name")), fn.get("parameters"))
        else:
            schemas.setdefault(str(t.get("name")), t.get("input_schema"))
    name = next(iter(schemas), "")
    if isinstance(choice, dict):
        name = str(choice.get("name") or (choice.get("function") or {}).get("name") or name)
    last = messages[-1]
    question = _text_of(last.get("content")) if isinstance(last, dict) else ""
    schema = schemas.get(name)
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        return name, {"query": question}
    arguments = instance(schema, question)
    return name, arguments if isinstance(arguments, dict) else {"query": question}

def _count_words(text: str) -> int:
    return len(text.split())

def _prompt_tokens(body: dict[str, Any]) -> int:
    n = sum(_count_words(_text_of(m.get("content"))) for m in body.get("messages", []) if isinstance(m, dict))
    return n + _count_words(_text_of(body.get("system")))

PROMPT_CACHE_TTL = 300.0  # seconds an unread cache entry lives (Anthropic's default, refreshed on a read)
OPENAI_CACHE_MIN = 1024  # OpenAI caches prompts from this many tokens on, automatically


def cache_minimum(model: str) -> int:
    """The shortest prefix (tokens) a model caches."""
    return 2048 if "haiku" in model else 1024


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """The prompt in cache order -- tools, system, messages -- as (the
    block's JSON without its marker, its tokens (words), whether it carries
    `cache_control`)."""
    out: list[tuple[str, int, bool]] = []

    def add(block: Any, words: int) -> None:
        marked = isinstance(block, dict) and bool(block.get("cache_control"))
        bare = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        out.append((json.dumps(bare, sort_keys=True), words, marked))

    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            add(tool, _count_words(json.dumps({k: v for k, v in tool.items() if k != "cache_control"})))
    system = body.get("system")
    for block in system if isinstance(system, list) else [system] if system else []:
        add(block, _count_words(_text_of([block]) if isinstance(block, dict) else str(block)))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        for block in content if isinstance(content, list) else [content]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                words = _count_words(_text_of(block.get("content")))
            elif isinstance(block, dict) and block.get("type") == "tool_use":
                words = _count_words(json.dumps(block.get("input")))
            else:
                words = _count_words(_text_of([block]) if isinstance(block, dict) else str(block or ""))
            add({"role": message.get("role"), "block": block} if not isinstance(block, dict) else
                {**block, "role": message.get("role")}, words)
    return out


def _prefixes(model: str, blocks: list[tuple[str, int, bool]]) -> list[tuple[str, int]]:
    """(fingerprint, tokens) of each prefix of the prompt, ending at each block."""
    digest = hashlib.sha256(model.encode())
    out, tokens = [], 0
    for text, words, _ in blocks:
        digest.update(text.encode())
        tokens += words
        out.append((digest.copy().hexdigest(), tokens))
    return out


def anthropic_usage(body: dict[str, Any], state: SimState) -> dict[str, int]:
    """Anthropic's input usage, prompt caching modelled: each marked prefix
    of at least the model's minimum is written (creation tokens) unless an
    earlier call wrote it; the longest prefix written before, ending at or
    before the last marker, is read. Input tokens are the rest."""
    blocks = _prompt_blocks(body)
    marks = [i for i, (_, _, marked) in enumerate(blocks) if marked]
    if not marks:  # (every block counted: tools, tool calls and results too)
        return {"input_tokens": sum(words for _, words, _ in blocks), "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}
    model, now, store = str(body.get("model")), time.monotonic(), state.prompt_cache
    prefixes = _prefixes(model, blocks)
    total = prefixes[-1][1]
    read = 0
    for fingerprint, tokens in reversed(prefixes[:marks[-1] + 1]):
        if store.get(fingerprint, 0.0) > now:
            read = tokens
            store[fingerprint] = now + PROMPT_CACHE_TTL
            break
    written = read
    for i in marks:
        fingerprint, tokens = prefixes[i]
        if tokens >= cache_minimum(model) and tokens > read:
            store[fingerprint] = now + PROMPT_CACHE_TTL
            written = max(written, tokens)
    return {"input_tokens": total - written, "cache_creation_input_tokens": written - read,
            "cache_read_input_tokens": read}


def openai_cached(body: dict[str, Any], state: SimState) -> int:
    """OpenAI's automatic prompt caching: a prompt of 1,024 tokens or more
    reads the longest prefix, ending at a message, that an earlier prompt
    had (and of at least 1,024 tokens); every such prefix is kept."""
    blocks = _prompt_blocks({**body, "tools": body.get("tools")})
    if not blocks:
        return 0
    prefixes = _prefixes("openai/" + str(body.get("model")), blocks)
    if prefixes[-1][1] < OPENAI_CACHE_MIN:
        return 0
    now, store, cached = time.monotonic(), state.prompt_cache, 0
    for fingerprint, tokens in prefixes:
        if tokens < OPENAI_CACHE_MIN:
            continue
        if store.get(fingerprint, 0.0) > now:
            cached = tokens
        store[fingerprint] = now + PROMPT_CACHE_TTL
    return cached

def structured_text(body: dict[str, Any]) -> str | None:
    """The answer to OpenAI's response_format (json_object, json_schema) or
    Anthropic's output_format: JSON valid against the schema; None for text."""
    fmt = body.get("response_format") or body.get("output_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    question = reply_text(body.get("messages", []))[len("Simulated reply to: "):]
    if fmt["type"] == "json_object":
        return json.dumps({"answer": question})
    spec = fmt.get("json_schema") if "json_schema" in fmt else fmt
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return json.dumps(instance(schema if isinstance(schema, dict) else {"type": "object"}, question))


def _answer(body: dict[str, Any], max_tokens: int | None) -> tuple[list[str], bool]:
    """Words of the reply (with their trailing spaces), and whether max_tokens cut it."""
    structured = structured_text(body)
    if structured is not None:
        return [structured[:len(structured) // 2], structured[len(structured) // 2:]], False
    words = _WORDS.findall(reply_text(body.get("messages", [])))
    if max_tokens is not None and len(words) > max_tokens:
        return words[:max_tokens], True
    return words, False

EMBEDDING_DIM = 64

def embedding(text: str) -> list[float]:
    """A deterministic, unnormalised vector: each lowercased word hashed
    (CRC-32) into one of 64 signed buckets. Rewordings that keep the words
    score near 1; it knows nothing of meaning (a simulator, not a model)."""
    vec = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"\w+", text.lower()):
        h = zlib.crc32(word.encode())
        vec[h % EMBEDDING_DIM] += 1.0 if h & 0x80000000 else -1.0
    return vec

def _error_doc(anthropic: bool, status: int, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}
    kind = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}

def anthropic_doc(body: dict[str, Any], state: SimState) -> dict[str, Any]:
    """The JSON answer (not streamed) to an Anthropic Messages request."""
    call = tool_call(body)
    if call is not None:
        return {
            "id": f"msg_sim_{next(state.ids):08d}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "tool_use", "id": f"toolu_sim_{next(state.ids):08d}", "name": call[0],
                         "input": call[1]}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {**anthropic_usage(body, state), "output_tokens": 1},
        }
    words, truncated = _answer(body, body["max_tokens"])
    return {
        "id": f"msg_sim_{next(state.ids):08d}", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": "".join(words)}],
        "stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None,
        "usage": {**anthropic_usage(body, state), "output_tokens": len(words)},
    }

def _openai_answer(body: dict[str, Any]) -> tuple[list[str], str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words, truncated = _answer(body, limit if isinstance(limit, int) else None)
    return words, "length" if truncated else "stop"

def _openai_usage(body: dict[str, Any], words: list[str], state: SimState) -> dict[str, Any]:
    prompt = _prompt_tokens(body)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": len(words),
                             "total_tokens": prompt + len(words)}
    cached = openai_cached(body, state)
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    return usage

def openai_doc(body: dict[str, Any], state: SimState) -> dict[str, Any]:
    """The JSON answer (not streamed) to an OpenAI Chat Completions request."""
    call = tool_call(body)
    if call is not None:
        return {
            "id": f"chatcmpl-sim{next(state.ids):08d}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "refusal": None,
                "tool_calls": [{"id": f"call_sim{next(state.ids):08d}", "type": "function",
                                "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}}],
            "usage": _openai_usage(body, ["x"], state), "system_fingerprint": None,
        }
    words, finish = _openai_answer(body)
    return {
        "id": f"chatcmpl-sim{next(state.ids):08d}", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": _openai_usage(body, words, state), "system_fingerprint": None,
    }
