"""OpenAI-compatible Chat Completions: `POST {base_url}/chat/completions`.

`base_url` includes the version path, as in the OpenAI SDK
(`https://api.openai.com/v1`, `http://localhost:11434/v1` for Ollama, ...), so
any compatible server works by pointing at it. Bearer key. Streams are `data:`
chunks ending with `data: [DONE]`; usage comes in a last chunk because the
request sets `stream_options.include_usage`.

Responses are mapped to the daemon's provider-neutral shape: finish reasons
to Anthropic-style stop reasons, tool calls to `tool_use` content blocks.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import msgspec
from httpx_sse import ServerSentEvent

from claif_client.protocol import CompletionRequest, CompletionResponse, Usage
from claif_client.wire import STOP_REASONS, messages_to_openai, tool_choice_to_openai, tools_to_openai

from ..config import ProviderConfig
from ..errors import UpstreamError
from ..retry import RetryPolicy
from .http import HttpProvider, RetryableFailure, StreamAssembler

__all__ = ["OpenAIProvider"]

_STOP_REASONS = STOP_REASONS


def _tool_block(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or ""
    try:
        arguments: Any = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        arguments = raw
    return {"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": arguments}


def _content(text: str, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks.extend(_tool_block(c) for c in tool_calls)
    return blocks


def _usage(usage: dict[str, Any]) -> Usage:
    """As `Usage` counts: input_tokens without the prompt-cache tokens
    (OpenAI's prompt_tokens includes its cached_tokens)."""
    details = usage.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    prompt = usage.get("prompt_tokens") or 0
    cached = min(cached, prompt) if isinstance(cached, int) and isinstance(prompt, int) else 0
    return Usage(input_tokens=prompt - cached, output_tokens=usage.get("completion_tokens", 0),
                 cache_read_input_tokens=cached)


class OpenAIProvider(HttpProvider):
    env_key = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"

    def url(self, config: ProviderConfig, model: str) -> str:
        return self.base_url(config) + "/chat/completions"

    def models_url(self, config: ProviderConfig) -> str:
        return self.base_url(config) + "/models"

    def embeddings_url(self, config: ProviderConfig, model: str) -> str:
        return self.base_url(config) + "/embeddings"

    async def embeddings(self, model: str, texts: list[str]) -> list[list[float]]:
        """`POST /embeddings` through the pool (the semantic tier's openai
        embedder): one vector per text, in order. One attempt: a failed
        embedding makes a cache miss, not a failed request."""
        return (await self.embed(model, texts))[0]

    async def embed_retried(self, model: str, texts: list[str],
                            dimensions: int | None = None) -> tuple[list[list[float]], int]:
        """`embed` with the retry policy (`retry.*`): a 429 or a 5xx is tried
        again, waiting what the provider asks."""
        retry = self.retry
        policy = RetryPolicy(retry.max_attempts, float(retry.base_delay), float(retry.max_delay), float(retry.deadline))
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.embed(model, texts, dimensions, retryable=True)
            except RetryableFailure as failure:
                delay = policy.next_delay(attempt, self.clock() - started, failure.retry_after)
                if delay is None:
                    raise failure.error from None
                self.perf.retry(self.name)
                await anyio.sleep(delay)

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None,
                    retryable: bool = False) -> tuple[list[list[float]], int]:
        """One `POST /embeddings`: a vector per text, in order, and the prompt
        tokens it cost. A failure worth another attempt is a RetryableFailure
        when `retryable`."""
        config = self.config
        key = self.api_key()
        doc: dict[str, Any] = {"model": model, "input": texts}
        if dimensions is not None:
            doc["dimensions"] = dimensions
        content = msgspec.json.encode(doc)
        async with self.limiter:
            lane = self.pool.acquire()
            status = "error"  # no HTTP status: the connection failed
            try:
                resp = await lane.send("POST", self.embeddings_url(config, model),
                                       self.request_headers(config, key), content)
                status = str(resp.status_code)
                raw = await resp.aread()
            except httpx.HTTPError as exc:
                error = UpstreamError(f"embeddings request to {self.name} failed: {type(exc).__name__}")
                raise (RetryableFailure(error) if retryable else error) from exc
            finally:
                self.perf.attempt(self.name, status)
                self.pool.release(lane)
        if resp.status_code >= 400:
            failure = self._status_failure(resp, raw, key)
            if isinstance(failure, RetryableFailure) and not retryable:
                raise failure.error
            raise failure
        try:
            answer = msgspec.json.decode(raw, type=_Embeddings)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} sent embeddings of the wrong shape ({exc})") from exc
        if len(answer.data) != len(texts):
            raise UpstreamError(f"{self.name} sent {len(answer.data)} embeddings for {len(texts)} inputs")
        vectors = [item.embedding for item in sorted(answer.data, key=lambda item: item.index)]
        return vectors, answer.usage.prompt_tokens if answer.usage is not None else 0

    def headers(self, config: ProviderConfig, key: str) -> dict[str, str]:
        if not key:
            return {"content-type": "application/json"}
        return {"authorization": f"Bearer {key}", "content-type": "application/json"}

    def body(self, request: CompletionRequest, model: str, stream: bool, config: ProviderConfig) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages_to_openai(request.system, request.messages)}
        # top_k has no Chat Completions equivalent; servers that take it can
        # get it through `extra`.
        for field, value in (
            ("max_tokens", request.max_tokens), ("temperature", request.temperature), ("top_p", request.top_p),
            ("stop", request.stop), ("tools", tools_to_openai(request.tools)),
            ("tool_choice", tool_choice_to_openai(request.tool_choice)),
        ):
            if value is not None:
                body[field] = value
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if request.extra:
            body.update(request.extra)
        return body

    def parse(self, doc: Any, model: str) -> CompletionResponse:
        try:
            choice = doc["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
            usage = doc.get("usage") or {}
            finish = choice.get("finish_reason")
            return CompletionResponse(
                id=doc.get("id", ""),
                model=f"{self.name}/{doc.get('model') or model}",
                text=text,
                content=_content(text, message.get("tool_calls") or []),
                stop_reason=_STOP_REASONS.get(finish, finish),
                usage=_usage(usage),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"{self.name} sent an unexpected response shape ({exc})") from exc

    def assembler(self, model: str) -> StreamAssembler:
        return _OpenAIStream(self.name, model)

    def error_message(self, doc: Any) -> str | None:
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            err = doc["error"]
            return str(err.get("message") or err.get("type") or "error")
        return None


class _OpenAIStream(StreamAssembler):
    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = ""
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.finished = False

    def feed(self, event: ServerSentEvent) -> str | None:
        if event.data == "[DONE]":
            self.finished = True
            return None
        if not event.data:
            return None
        try:
            data = msgspec.json.decode(event.data)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.provider} sent a stream chunk that is not JSON: {event.data[:100]!r}") from exc
        if "error" in data and data["error"]:
            err = data["error"]
            message = err.get("message", "error") if isinstance(err, dict) else str(err)
            raise UpstreamError(f"{self.provider} stream error: {message}", details={"provider": self.provider})
        self.id = data.get("id") or self.id
        self.model = data.get("model") or self.model
        if data.get("usage"):
            self.usage = data["usage"]
        delta_text = None
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                delta_text = delta["content"]
                self.text.append(delta_text)
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(call.get("index", 0), {"id": "", "function": {"name": "", "arguments": ""}})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return delta_text

    def response(self) -> CompletionResponse:
        text = "".join(self.text)
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return CompletionResponse(
            id=self.id,
            model=f"{self.provider}/{self.model}",
            text=text,
            content=_content(text, calls),
            stop_reason=_STOP_REASONS.get(self.finish or "", self.finish),
            usage=_usage(self.usage),
        )


class _Embedding(msgspec.Struct):
    embedding: list[float]
    index: int = 0


class _EmbeddingsUsage(msgspec.Struct):
    prompt_tokens: int = 0


class _Embeddings(msgspec.Struct):
    data: list[_Embedding]
    usage: _EmbeddingsUsage | None = None
