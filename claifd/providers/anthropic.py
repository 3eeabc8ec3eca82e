"""Anthropic Messages API: `POST {base_url}/v1/messages`.

`base_url` is the SDK's (`https://api.anthropic.com`, no version path). The
key goes in `x-api-key`, the API version in `anthropic-version`. Streams are
the documented event sequence: message_start, content_block_start /
content_block_delta / content_block_stop per block, message_delta,
message_stop, with ping and error events possible anywhere.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from httpx_sse import ServerSentEvent

from claif_client.protocol import CompletionRequest, CompletionResponse, Usage
from claif_client.wire import content_to_anthropic, tool_choice_to_anthropic, tools_to_anthropic

from .. import structured
from ..config import ProviderConfig
from ..content import text_of
from ..errors import UpstreamError
from .http import HttpProvider, RetryableFailure, StreamAssembler

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HttpProvider):
    env_key = "ANTHROPIC_API_KEY"
    default_base_url = "https://api.anthropic.com"
    default_model = "claude-sonnet-4-5"

    def url(self, config: ProviderConfig, model: str) -> str:
        return self.base_url(config) + "/v1/messages"

    def models_url(self, config: ProviderConfig) -> str:
        return self.base_url(config) + "/v1/models"

    async def count_tokens(self, body: bytes) -> tuple[int, bytes]:
        """`POST /v1/messages/count_tokens` passed through (the HTTP front):
        the upstream's status and body, or a 502 in Anthropic's error shape."""
        config = self.config
        key = self.api_key()
        lane = self.pool.acquire()
        try:
            resp = await lane.send("POST", self.base_url(config) + "/v1/messages/count_tokens",
                                   self.request_headers(config, key), body)
            return resp.status_code, await resp.aread()
        except httpx.HTTPError as exc:
            return 502, msgspec.json.encode({"type": "error", "error": {
                "type": "api_error", "message": f"cannot reach anthropic: {type(exc).__name__}"}})
        finally:
            self.pool.release(lane)

    def headers(self, config: ProviderConfig, key: str) -> dict[str, str]:
        headers = {"anthropic-version": config.version, "content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        return headers

    def body(self, request: CompletionRequest, model: str, stream: bool, config: ProviderConfig) -> dict[str, Any]:
        system_parts = [text_of(m.content) for m in request.messages if m.role == "system"]
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": content_to_anthropic(m.content)}
                         for m in request.messages if m.role != "system"],
            "max_tokens": request.max_tokens or config.default_max_tokens,
        }
        if request.system is not None and system_parts:
            body["system"] = "\n\n".join([text_of(request.system), *system_parts])
        elif request.system is not None:
            body["system"] = request.system
        elif system_parts:
            body["system"] = "\n\n".join(system_parts)
        for field, value in (
            ("temperature", request.temperature), ("top_p", request.top_p), ("top_k", request.top_k),
            ("stop_sequences", request.stop), ("tools", tools_to_anthropic(request.tools)),
            ("tool_choice", tool_choice_to_anthropic(request.tool_choice)),
        ):
            if value is not None:
                body[field] = value
        if stream:
            body["stream"] = True
        extra = request.extra
        fmt = structured.response_format(request)
        if extra and "response_format" in extra:
            extra = {k: v for k, v in extra.items() if k != "response_format"}
        if fmt is not None:  # no such field here: a tool the model must answer with
            body["tools"], body["tool_choice"] = structured.forced_tool(fmt, body.get("tools"), body.get("tool_choice"))
        if extra:
            body.update(extra)
        return body

    def parse(self, doc: Any, model: str) -> CompletionResponse:
        try:
            content, stop_reason = structured.unwrap(doc["content"], doc.get("stop_reason"))
            usage = doc.get("usage") or {}
            return CompletionResponse(
                id=doc.get("id", ""),
                model=f"{self.name}/{doc.get('model') or model}",
                text=text_of(content),
                content=content,
                stop_reason=stop_reason,
                usage=Usage(input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0),
                            cache_read_input_tokens=usage.get("cache_read_input_tokens") or 0,
                            cache_creation_input_tokens=usage.get("cache_creation_input_tokens") or 0),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"{self.name} sent an unexpected response shape ({exc})") from exc

    def assembler(self, model: str) -> StreamAssembler:
        return _AnthropicStream(self.name, model)

    def error_message(self, doc: Any) -> str | None:
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            err = doc["error"]
            return f"{err.get('type', 'error')}: {err.get('message', '')}"
        return None


class _AnthropicStream(StreamAssembler):
    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = ""
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, str] = {}
        # Blocks that are a structured answer (the output tool): their JSON is the answer's text.
        self.structured: set[int] = set()
        self.stop_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read = 0
        self.cache_creation = 0
        self.finished = False

    def feed(self, event: ServerSentEvent) -> str | None:
        if not event.data:
            return None
        try:
            data = msgspec.json.decode(event.data)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.provider} sent a stream event that is not JSON: {event.data[:100]!r}") from exc
        kind = data.get("type", event.event)
        if kind == "content_block_delta":
            delta = data.get("delta", {})
            index = data.get("index", 0)
            block = self.blocks.setdefault(index, {"type": "text", "text": ""})
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text", "")
                block["text"] = block.get("text", "") + text
                return text or None
            if dtype == "input_json_delta":
                piece = delta.get("partial_json", "")
                self.partial_json[index] = self.partial_json.get(index, "") + piece
                if index in self.structured:
                    return piece or None
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dtype == "signature_delta":
                block["signature"] = delta.get("signature", "")
            return None
        if kind == "message_start":
            message = data.get("message", {})
            self.id = message.get("id", "")
            self.model = message.get("model") or self.model
            usage = message.get("usage") or {}
            self.input_tokens = usage.get("input_tokens", 0)
            self.output_tokens = usage.get("output_tokens", 0)
            self.cache_read = usage.get("cache_read_input_tokens") or 0
            self.cache_creation = usage.get("cache_creation_input_tokens") or 0
        elif kind == "content_block_start":
            block = self.blocks[data.get("index", 0)] = dict(data.get("content_block", {}))
            if block.get("type") == "tool_use" and block.get("name") == structured.TOOL:
                self.structured.add(data.get("index", 0))
        elif kind == "content_block_stop":
            index = data.get("index", 0)
            if index in self.structured:  # the text as it was streamed
                self.blocks[index]["input"] = self.partial_json.pop(index, "") or "{}"
            elif index in self.partial_json:
                raw = self.partial_json.pop(index)
                try:
                    self.blocks[index]["input"] = msgspec.json.decode(raw) if raw else {}
                except msgspec.DecodeError:
                    self.blocks[index]["input"] = raw
        elif kind == "message_delta":
            self.stop_reason = data.get("delta", {}).get("stop_reason", self.stop_reason)
            usage = data.get("usage") or {}
            self.output_tokens = usage.get("output_tokens", self.output_tokens)
            self.input_tokens = usage.get("input_tokens") or self.input_tokens
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            err = data.get("error", {})
            error = UpstreamError(
                f"anthropic stream error: {err.get('type', 'error')}: {err.get('message', '')}",
                details={"provider": self.provider, "type": err.get("type")},
            )
            # An overloaded error before any text is worth another attempt.
            if err.get("type") in ("overloaded_error", "api_error"):
                raise RetryableFailure(error)
            raise error
        return None

    def response(self) -> CompletionResponse:
        content, stop_reason = structured.unwrap([self.blocks[i] for i in sorted(self.blocks)], self.stop_reason)
        return CompletionResponse(
            id=self.id,
            model=f"{self.provider}/{self.model}",
            text=text_of(content),
            content=content,
            stop_reason=stop_reason,
            usage=Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                        cache_read_input_tokens=self.cache_read, cache_creation_input_tokens=self.cache_creation),
        )
