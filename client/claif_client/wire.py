"""Translation between the two wire formats and the daemon's own (sans-IO).

The daemon's shape is Anthropic's: a request's messages are `user` and
`assistant` turns whose content is a string or content blocks (`text`,
`image`, `tool_use`, `tool_result`, ...), tools are `{name, description,
input_schema}`, and a response is content blocks with an Anthropic stop
reason. So:

    OpenAI request (HTTP front)   -> openai_request()      -> CompletionRequest
    Anthropic request (HTTP front)-> anthropic_request()   -> CompletionRequest
    CompletionRequest -> messages_to_openai(), tools_to_openai()... (openai provider)
    CompletionRequest -> tools_to_anthropic()...                    (anthropic provider)
    CompletionResponse -> shapes.py: each API's answer, whole or streamed (HTTP front)

Tools and tool choices already in the target's format pass through
unchanged, so a client that speaks one provider's dialect to that provider
loses nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from .protocol import CacheControl, CompletionRequest, Message
from .wire_check import check_anthropic, check_openai

__all__ = [
    "WireError", "openai_request", "anthropic_request", "messages_to_openai", "tools_to_openai",
    "tools_to_anthropic", "tool_choice_to_openai", "tool_choice_to_anthropic", "content_to_anthropic",
    "FINISH_REASONS", "STOP_REASONS", "OpenAIAsk", "choice_request", "MAX_CHOICES",
]

# Anthropic stop reason -> OpenAI finish reason, and back.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "refusal": "content_filter", "pause_turn": "stop"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


# The most choices one Chat Completions request may ask for (OpenAI's own bound).
MAX_CHOICES = 128


class WireError(ValueError):
    """A request that cannot be read in its wire format (a 400)."""


def _json_args(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw if raw is not None else {}
    if not raw:
        return {}
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def _text(content: Any, sep: str = "") -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return sep.join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")


# ------------------------------------------------------------- content parts


def _image_from_url(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def content_to_anthropic(content: Any) -> Any:
    """OpenAI content parts (text, image_url) as Anthropic blocks; anything else unchanged."""
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url") or {}
            out.append(_image_from_url(image.get("url", "") if isinstance(image, dict) else str(image)))
        elif isinstance(part, dict) and part.get("type") == "input_audio":
            raise WireError("audio input cannot be sent to this model")
        else:
            out.append(part)
    return out


def _part_to_openai(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        else:
            url = source.get("url", "")
        return {"type": "image_url", "image_url": {"url": url}}
    return block


# ------------------------------------------------------------------- tools


def tools_to_openai(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for tool in tools:
        if tool.get("type") == "function" or "function" in tool:
            out.append(tool)
            continue
        fn: dict[str, Any] = {"name": tool.get("name", "")}
        if tool.get("description"):
            fn["description"] = tool["description"]
        fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": fn})
    return out


def tools_to_anthropic(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for tool in tools:
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            out.append(tool)
            continue
        converted: dict[str, Any] = {"name": fn.get("name", "")}
        if fn.get("description"):
            converted["description"] = fn["description"]
        converted["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(converted)
    return out


def tool_choice_to_openai(choice: Any) -> Any:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return choice  # OpenAI's own ("auto", "required", {"type": "function", ...}) or None
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def tool_choice_to_anthropic(choice: Any) -> Any:
    if isinstance(choice, str):
        return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(
            choice, {"type": "auto"})
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return choice


# ---------------------------------------------------------------- messages


def messages_to_openai(system: Any, messages: list[Message]) -> list[dict[str, Any]]:
    """The daemon's messages as Chat Completions messages: tool_use blocks
    become an assistant's `tool_calls`, tool_result blocks `tool` messages."""
    out: list[dict[str, Any]] = []
    if system is not None:
        out.append({"role": "system", "content": _text(system, "\n\n")})  # blocks: paragraphs
    for m in messages:
        content = m.content
        if isinstance(content, str) or not any(
            isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result", "image") for b in content
        ):
            out.append({"role": m.role, "content": content})
            continue
        calls = [b for b in content if b.get("type") == "tool_use"]
        results = [b for b in content if b.get("type") == "tool_result"]
        rest = [_part_to_openai(b) for b in content if b.get("type") not in ("tool_use", "tool_result")]
        for result in results:
            out.append({"role": "tool", "tool_call_id": result.get("tool_use_id", ""),
                        "content": _text(result.get("content"))})
        if m.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": _text(rest) or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c.get("id", ""), "type": "function",
                     "function": {"name": c.get("name", ""),
                                  "arguments": msgspec.json.encode(c.get("input", {})).decode()}}
                    for c in calls
                ]
            out.append(message)
        elif rest:
            out.append({"role": m.role, "content": rest})
    return out


def _openai_messages(messages: Any) -> tuple[str | None, list[Message]]:
    if not isinstance(messages, list) or not messages:
        raise WireError("messages must be a non-empty list")
    system: list[str] = []
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise WireError(f"messages[{i}] must be an object")
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "user":
            out.append(Message(role="user", content=content_to_anthropic(content) if content is not None else ""))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text(content)
            if text:
                blocks.append({"type": "text", "text": text})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""),
                               "input": _json_args(fn.get("arguments"))})
            if not m.get("tool_calls"):
                out.append(Message(role="assistant", content=content if content is not None else ""))
            else:
                out.append(Message(role="assistant", content=blocks))
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""), "content": _text(content)}
            previous = out[-1] if out else None
            if previous is not None and previous.role == "user" and isinstance(previous.content, list) and all(
                b.get("type") == "tool_result" for b in previous.content
            ):
                previous.content.append(result)  # parallel calls: one user turn of results
            else:
                out.append(Message(role="user", content=[result]))
        else:
            raise WireError(f"messages[{i}].role {role!r} is not system, developer, user, assistant or tool")
    return ("\n\n".join(system) if system else None), out


# ----------------------------------------------------------------- requests

_OPENAI_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                  "tools", "tool_choice", "stream", "stream_options", "metadata", "n"}
_ANTHROPIC_FIELDS = {"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                     "stop_sequences", "tools", "tool_choice", "stream", "metadata"}


class OpenAIAsk(NamedTuple):
    request: CompletionRequest
    stream: bool
    include_usage: bool
    # Choices asked for: each is a completion of its own (see `choice_request`).
    n: int


def openai_request(body: Any) -> OpenAIAsk:
    """A Chat Completions body read. Fields the daemon does not model
    (response_format, seed, user, ...) ride in `extra` for an
    OpenAI-compatible upstream."""
    if not isinstance(body, dict):
        raise WireError("the body must be a JSON object")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        raise WireError(f"n must be an integer from 1 to {MAX_CHOICES}, got {n!r}")
    problem = check_openai(body)
    if problem is not None:
        raise WireError(problem)
    system, messages = _openai_messages(body.get("messages"))
    stop = body.get("stop")
    options = body.get("stream_options") or {}
    extra = {k: v for k, v in body.items() if k not in _OPENAI_FIELDS}
    try:
        request = msgspec.convert({
            "messages": messages, "model": body.get("model"), "system": system,
            "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "stop": [stop] if isinstance(stop, str) else stop,
            "tools": tools_to_anthropic(body.get("tools")),
            "tool_choice": tool_choice_to_anthropic(body["tool_choice"]) if "tool_choice" in body else None,
            "metadata": body.get("metadata"), "extra": extra or None,
        }, CompletionRequest)
    except msgspec.ValidationError as exc:
        raise WireError(str(exc)) from exc
    return OpenAIAsk(request, bool(body.get("stream")), bool(isinstance(options, dict) and options.get("include_usage")),
                     n)


def choice_request(request: CompletionRequest, index: int) -> CompletionRequest:
    """The request for choice `index` of n: choice 0 is the request itself;
    choice i > 0 is cached apart (namespace "<namespace>#n<i>"), so the n
    choices are n upstream completions, not one answer repeated, and asking
    again serves each from the cache."""
    if index == 0:
        return request
    cache = request.cache or CacheControl()
    namespace = f"{cache.namespace or ''}#n{index}"
    return msgspec.structs.replace(request, cache=msgspec.structs.replace(cache, namespace=namespace))


def anthropic_request(body: Any) -> tuple[CompletionRequest, bool]:
    if not isinstance(body, dict):
        raise WireError("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("messages must be a non-empty list")
    problem = check_anthropic(body)
    if problem is not None:
        raise WireError(problem)
    extra = {k: v for k, v in body.items() if k not in _ANTHROPIC_FIELDS}
    output = extra.pop("output_format", None)
    if output is not None:  # Anthropic's structured output, as OpenAI's response_format (strict, as Anthropic's is)
        if not isinstance(output, dict) or output.get("type") != "json_schema" or not isinstance(output.get("schema"),
                                                                                                 dict):
            raise WireError("output_format must be {\"type\": \"json_schema\", \"schema\": {...}}")
        extra["response_format"] = {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": output["schema"], "strict": True}}
    try:
        request = msgspec.convert({
            "messages": messages, "model": body.get("model"), "system": body.get("system"),
            "max_tokens": body.get("max_tokens"), "temperature": body.get("temperature"),
            "top_p": body.get("top_p"), "top_k": body.get("top_k"), "stop": body.get("stop_sequences"),
            "tools": body.get("tools"), "tool_choice": body.get("tool_choice"),
            "metadata": body.get("metadata"), "extra": extra or None,
        }, CompletionRequest)
    except msgspec.ValidationError as exc:
        raise WireError(str(exc)) from exc
    return request, bool(body.get("stream"))
