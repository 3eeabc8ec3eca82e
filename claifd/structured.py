"""Structured output across wires: OpenAI's `response_format` (json_object,
json_schema) for any model.

A request carries it in OpenAI's shape in `extra["response_format"]` (the
Anthropic wire's `output_format` is read into the same shape, wire.py), so it
is part of the cache key like any field. An OpenAI-compatible provider sends
it as it is. An Anthropic model has no such field: it is given one tool whose
input schema is the wanted schema (`TOOL`), and is made to call it; the
call's input comes back as the answer's text (`unwrap`, and streamed as it
arrives). With `strict: true` the answer is checked against the schema
(`check`, jsonschema), whichever provider made it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from claif_client.protocol import CompletionRequest, CompletionResponse

from .errors import BadRequest, UpstreamError

__all__ = ["TOOL", "check", "forced_tool", "response_format", "unwrap"]

# The tool an Anthropic model answers a structured request with (never shown to a caller).
TOOL = "claif_structured_output"
_TYPES = ("text", "json_object", "json_schema")


def response_format(request: CompletionRequest) -> dict[str, Any] | None:
    """The request's response_format when it asks for JSON (None for text or none)."""
    extra = request.extra
    fmt = extra.get("response_format") if extra else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in _TYPES:
        raise BadRequest(f"response_format.type must be one of {', '.join(_TYPES)}, not {kind!r}")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise BadRequest("response_format.json_schema must be an object with a `schema` object")
    return fmt if kind != "text" else None


def _schema(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "object"}
    schema = fmt["json_schema"].get("schema")
    return schema if isinstance(schema, dict) and schema else {"type": "object"}


def forced_tool(fmt: dict[str, Any], tools: list[dict[str, Any]] | None, tool_choice: Any) -> tuple[
        list[dict[str, Any]], Any]:
    """Anthropic's tools and tool_choice for a structured answer: the output
    tool added; forced when the caller has no tools of its own, else the
    model must call one of them or the output tool (unless the caller chose)."""
    spec = fmt.get("json_schema") or {}
    described = spec.get("description") or (f"the answer, as {spec['name']}" if spec.get("name") else "the answer")
    tool = {"name": TOOL, "description": f"Give {described}: always answer by calling this tool.",
            "input_schema": _schema(fmt)}
    if not tools:
        return [tool], {"type": "tool", "name": TOOL}
    return [*tools, tool], tool_choice if tool_choice is not None else {"type": "any"}


def unwrap(content: list[dict[str, Any]], stop_reason: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The output tool's call as a text block (its input as JSON text);
    stop_reason end_turn when that was the only call."""
    if not any(b.get("type") == "tool_use" and b.get("name") == TOOL for b in content):
        return content, stop_reason
    out = []
    for block in content:
        if block.get("type") == "tool_use" and block.get("name") == TOOL:
            raw = block.get("input")
            text = raw if isinstance(raw, str) else msgspec.json.encode(raw if raw is not None else {}).decode()
            out.append({"type": "text", "text": text})
        else:
            out.append(block)
    if stop_reason == "tool_use" and not any(b.get("type") == "tool_use" for b in out):
        stop_reason = "end_turn"
    return out, stop_reason


def check(request: CompletionRequest, response: CompletionResponse) -> None:
    """With json_schema `strict: true`: the answer's text is JSON valid
    against the schema, or an UpstreamError saying where it is not (an answer
    that called a tool instead has no text to check)."""
    fmt = response_format(request)
    if fmt is None or fmt["type"] != "json_schema" or not fmt["json_schema"].get("strict"):
        return
    if not response.text and any(b.get("type") == "tool_use" for b in response.content or []):
        return
    try:
        answer = msgspec.json.decode(response.text)
    except msgspec.DecodeError as exc:
        raise UpstreamError(f"the answer is not JSON, though response_format asked for strict JSON: {exc}",
                            details={"schema_error": "not JSON"}) from None
    import jsonschema  # (only for strict structured output)

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema(fmt)).iter_errors(answer))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(the top level)"
        raise UpstreamError(f"the answer does not match response_format's schema at {where}: {error.message[:300]}",
                            details={"schema_error": error.message[:300]})
