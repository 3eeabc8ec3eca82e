"""`client.chat.completions.create(...)`: the OpenAI-style facade.

claif_cla users know this API, so code written against the OpenAI SDK can point
at claifd with little change. Results are small dataclasses shaped like the
SDK's (`.choices[0].message.content`, chunks with `.choices[0].delta.content`),
built from the daemon's provider-neutral `CompletionResponse`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from ._requests import build_request
from .protocol import CompletionRequest, CompletionResponse, Message

if TYPE_CHECKING:
    from ._async import AsyncClient, AsyncCompletionStream
    from ._sync import Client, CompletionStream

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "Delta",
    "CompletionUsage",
    "SyncChat",
    "AsyncChat",
]

# Anthropic stop reasons -> OpenAI finish reasons.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
    "max_tokens": "length",
    "length": "length",
    "tool_use": "tool_calls",
    "tool_calls": "tool_calls",
}


@dataclass(slots=True)
class ChatMessage:
    role: str
    content: str | None


@dataclass(slots=True)
class Choice:
    index: int
    message: ChatMessage
    finish_reason: str | None


@dataclass(slots=True)
class CompletionUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(slots=True)
class ChatCompletion:
    id: str
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    cached: bool | str = False
    object: str = "chat.completion"


@dataclass(slots=True)
class Delta:
    content: str | None = None
    role: str | None = None


@dataclass(slots=True)
class ChunkChoice:
    index: int
    delta: Delta
    finish_reason: str | None = None


@dataclass(slots=True)
class ChatCompletionChunk:
    id: str
    model: str
    choices: list[ChunkChoice] = field(default_factory=list)
    usage: CompletionUsage | None = None
    object: str = "chat.completion.chunk"


def _to_request(model: str | None, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> CompletionRequest:
    """OpenAI arguments -> a claifd request (system messages become `system`)."""
    system_parts = [m["content"] for m in messages if m.get("role") in ("system", "developer")]
    convo = [Message(role=m["role"], content=m["content"]) for m in messages if m.get("role") not in ("system", "developer")]
    stop = kwargs.pop("stop", None)
    max_tokens = kwargs.pop("max_completion_tokens", None) or kwargs.pop("max_tokens", None)
    kwargs.pop("n", None)
    cache = kwargs.pop("cache", None)
    # The same request shape as Client.complete: `cache` takes a mode name,
    # True/False or a dict; unknown fields are an InvalidRequest naming them.
    return build_request(
        convo,
        model=model,
        system="\n\n".join(str(p) for p in system_parts) if system_parts else None,
        max_tokens=max_tokens,
        cache=cache,
        more={"stop": [stop] if isinstance(stop, str) else stop, **kwargs},
    )


def to_chat_completion(resp: CompletionResponse) -> ChatCompletion:
    return ChatCompletion(
        id=resp.id,
        model=resp.model,
        choices=[
            Choice(
                index=0,
                message=ChatMessage(role="assistant", content=resp.text),
                finish_reason=_FINISH_REASONS.get(resp.stop_reason or "", resp.stop_reason),
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=resp.usage.input_tokens,
            completion_tokens=resp.usage.output_tokens,
            total_tokens=resp.usage.input_tokens + resp.usage.output_tokens,
        ),
        cached=resp.cached,
    )


def _final_chunk(resp: CompletionResponse | None, model: str) -> ChatCompletionChunk:
    if resp is None:
        return ChatCompletionChunk(id="", model=model, choices=[ChunkChoice(0, Delta(), "stop")])
    done = to_chat_completion(resp)
    return ChatCompletionChunk(
        id=resp.id,
        model=resp.model,
        choices=[ChunkChoice(0, Delta(), done.choices[0].finish_reason)],
        usage=done.usage,
    )


def _iter_chunks(stream: CompletionStream, model: str) -> Iterator[ChatCompletionChunk]:
    with stream:
        for delta in stream:
            yield ChatCompletionChunk(id="", model=model, choices=[ChunkChoice(0, Delta(content=delta))])
        yield _final_chunk(stream.response, model)


async def _aiter_chunks(stream: AsyncCompletionStream, model: str) -> AsyncIterator[ChatCompletionChunk]:
    async with stream:
        async for delta in stream:
            yield ChatCompletionChunk(id="", model=model, choices=[ChunkChoice(0, Delta(content=delta))])
        yield _final_chunk(stream.response, model)


class _SyncCompletions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self, *, messages: list[dict[str, Any]], model: str | None = ..., stream: Literal[False] = ..., **kwargs: Any
    ) -> ChatCompletion: ...

    @overload
    def create(
        self, *, messages: list[dict[str, Any]], model: str | None = ..., stream: Literal[True], **kwargs: Any
    ) -> Iterator[ChatCompletionChunk]: ...

    def create(
        self, *, messages: list[dict[str, Any]], model: str | None = None, stream: bool = False, **kwargs: Any
    ) -> ChatCompletion | Iterator[ChatCompletionChunk]:
        request = _to_request(model, messages, kwargs)
        if stream:
            return _iter_chunks(self._client.stream_request(request), model or "")
        return to_chat_completion(self._client.complete_request(request))


class _AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self, *, messages: list[dict[str, Any]], model: str | None = ..., stream: Literal[False] = ..., **kwargs: Any
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self, *, messages: list[dict[str, Any]], model: str | None = ..., stream: Literal[True], **kwargs: Any
    ) -> AsyncIterator[ChatCompletionChunk]: ...

    async def create(
        self, *, messages: list[dict[str, Any]], model: str | None = None, stream: bool = False, **kwargs: Any
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        request = _to_request(model, messages, kwargs)
        if stream:
            return _aiter_chunks(self._client.stream_request(request), model or "")
        return to_chat_completion(await self._client.complete_request(request))


class SyncChat:
    def __init__(self, client: Client) -> None:
        self.completions = _SyncCompletions(client)


class AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = _AsyncCompletions(client)
