"""OpenAI's Responses API on the one pipeline, for any model:

    POST   /v1/responses        input (a string or items) and instructions,
                                function tools and their calls, text.format
                                (structured output), JSON or the event stream
    GET    /v1/responses/{id}   a stored response
    DELETE /v1/responses/{id}

A request is read into a Chat Completions body (`to_chat`) and from there
into the daemon's shape, like any chat request; its answer is written in the
Responses shape by a sink of its own (`ResponsesJSON`, `ResponsesStream`).

`previous_response_id` is backed by sessions: a response made with `store`
(the default) is a session of its own, named by the response id, holding
the conversation up to and including it and the response object. A later
request that names it continues that conversation (its `instructions` are
not carried over, as OpenAI's are not). The session is written before the
answer goes out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from claif_client.protocol import CompletionResponse
from claif_client.shapes import tool_calls_of

from ..errors import BadRequest
from ..sessions.context import estimate_tokens
from ..sessions.model import SessionMessage
from .server import Exchange
from .sinks import Answer

__all__ = ["ResponsesJSON", "ResponsesStream", "response_object", "to_chat"]

# What a Responses request may carry besides what is translated: read and not needed here.
_IGNORED = {"store", "metadata", "user", "parallel_tool_calls", "reasoning", "truncation", "include",
            "service_tier", "background", "prompt_cache_key", "safety_identifier", "stream_options"}
_KNOWN = {"model", "input", "instructions", "tools", "tool_choice", "stream", "previous_response_id",
          "max_output_tokens", "temperature", "top_p", "text"} | _IGNORED
_PART_TYPES = {"input_text": "text", "output_text": "text"}


def to_chat(doc: Any) -> tuple[dict[str, Any], list[str]]:
    """The Chat Completions body a Responses request means, and the fields
    read but not used (for x-claif-ignored). A field that cannot be
    translated is a BadRequest naming it."""
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(k for k in doc if k not in _KNOWN)
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a field of the Responses API this daemon serves")
    messages: list[dict[str, Any]] = []
    instructions = doc.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("instructions: a string")
        messages.append({"role": "system", "content": instructions})
    raw = doc.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list) and raw:
        for i, item in enumerate(raw):
            _item(messages, item, f"input[{i}]")
    else:
        raise BadRequest("input: a string or a non-empty list of items")
    body: dict[str, Any] = {"model": doc.get("model"), "messages": messages, "stream": bool(doc.get("stream"))}
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if doc.get(source) is not None:
            body[target] = doc[source]
    tools = doc.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise BadRequest("tools: a list")
        body["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = doc.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
            body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        else:
            raise BadRequest("tool_choice: auto, none, required or {\"type\": \"function\", \"name\": ...}")
    fmt = (doc.get("text") or {}).get("format") if isinstance(doc.get("text"), dict) else None
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
        elif kind == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise BadRequest("text.format.type: text, json_object or json_schema")
    ignored = sorted(k for k in doc if k in _IGNORED and k not in ("store", "stream_options", "metadata"))
    return body, ignored


def _item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: an object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise BadRequest(f"{where}.role: user, assistant, system or developer")
        messages.append({"role": role, "content": _content(item.get("content"), where)})
    elif kind == "function_call":
        call = {"id": _str(item, "call_id", where), "type": "function",
                "function": {"name": _str(item, "name", where), "arguments": item.get("arguments") or "{}"}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)  # parallel calls: one assistant turn
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            raise BadRequest(f"{where}.output: a string")
        messages.append({"role": "tool", "tool_call_id": _str(item, "call_id", where), "content": output})
    elif kind == "reasoning":
        pass  # a model's own reasoning of an earlier turn: not sent on (no provider here takes another's)
    else:
        raise BadRequest(f"{where}.type {kind!r}: message, function_call, function_call_output or reasoning")


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _PART_TYPES:
            parts.append({"type": "text", "text": _str(part, "text", f"{where}.content[{j}]")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise BadRequest(f"{where}.content[{j}].type {kind!r}: input_text, output_text or input_image "
                             f"(with an image_url)")
    return parts


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(f"{where}.type {kind!r}: only function tools are served (hosted tools are OpenAI's own)")
    function = {"name": _str(tool, "name", where), "parameters": tool.get("parameters") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _str(doc: dict[str, Any], field: str, where: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str):
        raise BadRequest(f"{where}.{field}: a string")
    return value


# ------------------------------------------------------------ the answer


def output_items(response: CompletionResponse, rid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if response.text:
        items.append(_message(rid, response.text, "completed"))
    for call in tool_calls_of(response):
        items.append(_function_call(call, call["function"]["arguments"], "completed"))
    return items


def _message(rid: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": "msg_" + rid, "status": status, "role": "assistant", "content": content}


def _function_call(call: dict[str, Any], arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call["id"], "call_id": call["id"],
            "name": call["function"]["name"], "arguments": arguments, "status": status}


def response_object(rid: str, created: int, model: str, request: dict[str, Any],
                    response: CompletionResponse | None) -> dict[str, Any]:
    """The Response object: in progress (`response` None) or done."""
    status, incomplete, usage = "in_progress", None, None
    if response is not None:
        status = "completed"
        if response.stop_reason == "max_tokens":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        u = response.usage
        prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens  # (OpenAI's count)
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
                 "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + u.output_tokens}
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output_items(response, rid.removeprefix("resp_")) if response is not None else [],
        "usage": usage, "error": None, "incomplete_details": incomplete,
        "instructions": request.get("instructions"), "metadata": request.get("metadata") or {},
        "previous_response_id": request.get("previous_response_id"),
        "tools": request.get("tools") or [], "tool_choice": request.get("tool_choice") or "auto",
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"), "top_p": request.get("top_p"),
        "max_output_tokens": request.get("max_output_tokens"), "store": request.get("store", True) is not False,
        "text": request.get("text") or {"format": {"type": "text"}}, "truncation": "disabled",
        "reasoning": {"effort": None, "summary": None}, "user": request.get("user"),
    }


Keep = Callable[[CompletionResponse, dict[str, Any]], Awaitable[None]]


class _Responses(Answer):
    """What both Responses sinks share: the request it answers, the id, and
    `keep` (the session written before the answer goes out)."""

    def __init__(self, ex: Exchange, model: str, rid: str, headers: list[tuple[str, str]],
                 request: dict[str, Any], keep: Keep | None) -> None:
        super().__init__(ex, model, rid, headers)
        self.request = request
        self.keep = keep
        self.created = int(time.time())

    async def _final(self, response: CompletionResponse) -> dict[str, Any]:
        doc = response_object(self.rid, self.created, self.model or response.model, self.request, response)
        if self.keep is not None:
            await self.keep(response, doc)
        return doc


class ResponsesJSON(_Responses):
    async def done(self, response: CompletionResponse) -> None:
        await self.ex.respond(200, await self._final(response), self._head(response))


class ResponsesStream(_Responses):
    """The Responses event stream: response.created, the output items with
    their deltas, response.completed; each event numbered."""

    streaming = True

    def __init__(self, ex: Exchange, model: str, rid: str, headers: list[tuple[str, str]],
                 request: dict[str, Any], keep: Keep | None) -> None:
        super().__init__(ex, model, rid, headers, request, keep)
        self.sequence = 0
        self.text: list[str] | None = None  # the message's text so far, once its item is open
        self.index = 0  # the next output item's index

    async def _event(self, kind: str, **fields: Any) -> None:
        await self.ex.sse({"type": kind, "sequence_number": self.sequence, **fields}, kind)
        self.sequence += 1

    async def begin(self) -> None:
        if not self.ex.started:
            await self.ex.start_sse(self._head())
            doc = response_object(self.rid, self.created, self.model, self.request, None)
            await self._event("response.created", response=doc)
            await self._event("response.in_progress", response=doc)

    async def delta(self, text: str) -> None:
        await self.begin()
        item = "msg_" + self.rid.removeprefix("resp_")
        if self.text is None:
            self.text = []
            await self._event("response.output_item.added", output_index=self.index,
                              item=_message(self.rid.removeprefix("resp_"), None, "in_progress"))
            await self._event("response.content_part.added", item_id=item, output_index=self.index, content_index=0,
                              part={"type": "output_text", "text": "", "annotations": []})
        self.text.append(text)
        await self._event("response.output_text.delta", item_id=item, output_index=self.index, content_index=0,
                          delta=text, logprobs=[])

    async def done(self, response: CompletionResponse) -> None:
        await self.begin()
        if self.text is None and response.text:
            await self.delta(response.text)  # (an answer that came whole)
        if self.text is not None:
            text = "".join(self.text)
            item = "msg_" + self.rid.removeprefix("resp_")
            part = {"type": "output_text", "text": text, "annotations": []}
            await self._event("response.output_text.done", item_id=item, output_index=self.index, content_index=0,
                              text=text, logprobs=[])
            await self._event("response.content_part.done", item_id=item, output_index=self.index, content_index=0,
                              part=part)
            await self._event("response.output_item.done", output_index=self.index,
                              item=_message(self.rid.removeprefix("resp_"), text, "completed"))
            self.index += 1
        for call in tool_calls_of(response):
            arguments = call["function"]["arguments"]
            await self._event("response.output_item.added", output_index=self.index,
                              item=_function_call(call, "", "in_progress"))
            await self._event("response.function_call_arguments.delta", item_id="fc_" + call["id"],
                              output_index=self.index, delta=arguments)
            await self._event("response.function_call_arguments.done", item_id="fc_" + call["id"],
                              output_index=self.index, arguments=arguments)
            await self._event("response.output_item.done", output_index=self.index,
                              item=_function_call(call, arguments, "completed"))
            self.index += 1
        doc = await self._final(response)
        await self._event("response.completed" if doc["status"] == "completed" else "response.incomplete",
                          response=doc)
        await self.ex.end()


def conversation(messages: list[Any], response: CompletionResponse, now: float) -> list[SessionMessage]:
    """The session a stored response keeps: the messages it was asked with
    (those before it included) and its answer."""
    kept = [SessionMessage(role=m.role, content=m.content, time=now,
                           tokens=estimate_tokens(SessionMessage(role=m.role, content=m.content)))
            for m in messages]
    blocks = response.content
    content: str | list[dict[str, Any]] = response.text if all(b.get("type") == "text" for b in blocks) else blocks
    kept.append(SessionMessage(role="assistant", content=content, time=now, tokens=response.usage.output_tokens,
                               model=response.model))
    return kept
