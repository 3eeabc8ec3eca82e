"""SDK-shaped facades: `client.chat.completions.create(...)` (OpenAI) and
`client.messages.create(...)` / `client.messages.stream(...)` (Anthropic).

Code written against either SDK runs against the daemon with the client
swapped. The arguments are read exactly as the HTTP front reads the same
JSON body (`wire.py`), so every parameter is honoured or refused with an
`InvalidRequest` naming it (never dropped): `n` choices are n completions
(choice i > 0 cached apart: `wire.choice_request`), `extra_headers` and
`extra_query` are refused; `extra_body` is merged into the body; fields the
daemon does not model (`seed`, `response_format`, `user`, ...) reach an
OpenAI-compatible upstream as they are. claifd's own options ride along:
`cache=`, `complexity_hint=`, `timeout=`.

Results are `SDKObject`s: attribute access over the same document the SDK
would build (`.id`, `.created`, `.model` as sent, `.choices[0].message.tool_calls`,
`.usage.prompt_tokens`; `.content[0].type`, `.stop_reason`, `.usage.cache_read_input_tokens`),
with `.model_dump()` / `.to_dict()` / `.model_dump_json()`. Streams yield
chunks with one `id` and a first `role` delta. Errors are the SDKs' names
(`BadRequestError`, `AuthenticationError`, `NotFoundError`, `RateLimitError`,
`APITimeoutError`, ...; see errors.py), all `ClaifError`s.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ._requests import _cache_control
from .errors import InvalidRequest
from .protocol import CompletionRequest, CompletionResponse
from .shapes import anthropic_response, openai_choices, openai_chunk, openai_finish, openai_usage, openai_usage_chunk
from .wire import WireError, anthropic_request, choice_request, openai_request

if TYPE_CHECKING:
    from ._async import AsyncClient, AsyncCompletionStream
    from ._sync import Client, CompletionStream

__all__ = ["SDKObject", "SyncChat", "AsyncChat", "SyncMessages", "AsyncMessages", "MessageStream"]

# The SDK's optional fields, present (as None) when the answer has none.
_DELTA = {"content": None, "function_call": None, "refusal": None, "role": None, "tool_calls": None}
_MESSAGE = {"content": None, "refusal": None, "role": "assistant", "annotations": None, "audio": None,
            "function_call": None, "tool_calls": None}

# Fields the SDKs leave as plain JSON values (a tool's input is any object).
_RAW = frozenset({"input", "metadata"})

# claifd's own options, taken from the keyword arguments before the body is read.
_OWN = ("cache", "complexity_hint", "timeout")


class SDKObject:
    """Attribute access over an SDK-shaped document, as the SDKs' models give."""

    __slots__ = ("_doc", "cached")

    def __init__(self, doc: dict[str, Any], cached: bool | str = False) -> None:
        self._doc = doc
        # How the daemon answered: False, "exact" or "semantic" (not part of the SDK's document).
        self.cached = cached

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._doc[name]
        except KeyError:
            raise AttributeError(name) from None
        return value if name in _RAW else _wrap(value)

    def __getitem__(self, name: str) -> Any:
        return _wrap(self._doc[name])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SDKObject) and other._doc == self._doc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._doc!r})"

    def model_dump(self, exclude_none: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self._doc))
        return _drop_none(doc) if exclude_none else doc

    to_dict = model_dump

    def model_dump_json(self) -> str:
        return msgspec.json.encode(self._doc).decode()


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return SDKObject(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _body(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON body the SDK would send, claifd's own options)."""
    for refused in ("extra_headers", "extra_query"):
        if kwargs.pop(refused, None):
            raise InvalidRequest(f"{refused} cannot be honoured through the daemon's socket (use the HTTP front)")
    own = {k: kwargs.pop(k) for k in _OWN if k in kwargs}
    extra = kwargs.pop("extra_body", None) or {}
    return {**{k: v for k, v in kwargs.items() if v is not None}, **extra}, own


def _with_own(request: CompletionRequest, own: dict[str, Any]) -> CompletionRequest:
    changes: dict[str, Any] = {}
    if "cache" in own:
        changes["cache"] = _cache_control(own["cache"])
    if own.get("complexity_hint") is not None:
        changes["complexity_hint"] = own["complexity_hint"]
    if own.get("timeout") is not None:
        changes["timeout"] = float(own["timeout"])
    return msgspec.structs.replace(request, **changes) if changes else request


# ------------------------------------------------------------------ OpenAI


def _openai(kwargs: dict[str, Any]) -> tuple[list[CompletionRequest], bool, bool, str]:
    """(one request per choice, stream, include_usage, the model as sent)."""
    body, own = _body(kwargs)
    try:
        ask = openai_request(body)
    except WireError as exc:
        raise InvalidRequest(str(exc)) from None
    if ask.n > 1 and ask.stream:
        raise InvalidRequest("n > 1 with stream=True is not supported by the facade (the HTTP front streams it)")
    request = _with_own(ask.request, own)
    return [choice_request(request, i) for i in range(ask.n)], ask.stream, ask.include_usage, \
        str(body.get("model") or "")


def _chat_completion(responses: list[CompletionResponse], model: str) -> SDKObject:
    response = responses[0]
    doc = openai_choices(responses, model or response.model, response.id or _new_id("chatcmpl-"), int(time.time()))
    doc["service_tier"] = None
    doc["system_fingerprint"] = None
    for choice in doc["choices"]:
        choice["message"] = {**_MESSAGE, **choice["message"]}
    return SDKObject(doc, response.cached)


def _new_id(prefix: str) -> str:
    return prefix + "claif" + secrets.token_hex(12)


class _Chunks:
    """OpenAI stream chunks from the daemon's text deltas and final response."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = _new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> SDKObject:
        doc = openai_chunk(self.id, self.created, self.model, 0, {**_DELTA, **delta}, finish, usage_field=True)
        doc["service_tier"] = None
        return SDKObject(doc)

    def first(self) -> SDKObject:
        return self.chunk({"role": "assistant", "content": "", "refusal": None})

    def text(self, text: str) -> SDKObject:
        return self.chunk({"content": text})

    def last(self, response: CompletionResponse | None) -> list[SDKObject]:
        if response is None:
            return [self.chunk({}, "stop")]
        deltas, finish = openai_finish(response)
        out = [self.chunk(delta) for delta in deltas]
        out.append(self.chunk({}, finish))
        if self.include_usage:
            last = openai_usage_chunk(self.id, self.created, self.model, openai_usage([response]))
            out.append(SDKObject({**last, "service_tier": None}))
        return out


def _iter_chunks(stream: CompletionStream, chunks: _Chunks) -> Iterator[SDKObject]:
    with stream:
        yield chunks.first()
        for delta in stream:
            yield chunks.text(delta)
        yield from chunks.last(stream.response)


async def _aiter_chunks(stream: AsyncCompletionStream, chunks: _Chunks) -> AsyncIterator[SDKObject]:
    async with stream:
        yield chunks.first()
        async for delta in stream:
            yield chunks.text(delta)
        for chunk in chunks.last(stream.response):
            yield chunk


class _SyncCompletions:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        """The OpenAI SDK's `chat.completions.create`: a ChatCompletion, or an iterator of chunks."""
        requests, stream, include_usage, model = _openai(kwargs)
        if stream:
            return _iter_chunks(self._client.stream_request(requests[0]), _Chunks(model, include_usage))
        return _chat_completion([self._client.complete_request(r) for r in requests], model)


class _AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, **kwargs: Any) -> Any:
        requests, stream, include_usage, model = _openai(kwargs)
        if stream:
            return _aiter_chunks(self._client.stream_request(requests[0]), _Chunks(model, include_usage))
        return _chat_completion([await self._client.complete_request(r) for r in requests], model)


class SyncChat:
    def __init__(self, client: Client) -> None:
        self.completions = _SyncCompletions(client)


class AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = _AsyncCompletions(client)


# --------------------------------------------------------------- Anthropic


def _anthropic(kwargs: dict[str, Any]) -> tuple[CompletionRequest, bool, str]:
    body, own = _body(kwargs)
    if "max_tokens" not in body:
        raise InvalidRequest("max_tokens is required (as in the Anthropic SDK)")
    try:
        request, stream = anthropic_request(body)
    except WireError as exc:
        raise InvalidRequest(str(exc)) from None
    return _with_own(request, own), stream, str(body.get("model") or "")


def _message(response: CompletionResponse, model: str) -> SDKObject:
    doc = anthropic_response(response, model or response.model, response.id or _new_id("msg_"))
    doc["usage"].update(server_tool_use=None, service_tier=None)
    return SDKObject(doc, response.cached)


class MessageStream:
    """`client.messages.stream(...)`: `.text_stream`, `get_final_message()`,
    `get_final_text()`, `until_done()`; a context manager (leaving it early
    cancels the request on the daemon)."""

    def __init__(self, stream: CompletionStream, model: str) -> None:
        self._stream = stream
        self._model = model

    def __enter__(self) -> MessageStream:
        self._stream.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stream.__exit__(*exc_info)

    @property
    def text_stream(self) -> Iterator[str]:
        return iter(self._stream)

    def until_done(self) -> None:
        for _ in self._stream:
            pass

    def get_final_message(self) -> SDKObject:
        self.until_done()
        assert self._stream.response is not None
        return _message(self._stream.response, self._model)

    def get_final_text(self) -> str:
        return "".join(b.text for b in self.get_final_message().content if b.type == "text")


class AsyncMessageStream:
    def __init__(self, stream: AsyncCompletionStream, model: str) -> None:
        self._stream = stream
        self._model = model

    async def __aenter__(self) -> AsyncMessageStream:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stream.__aexit__(*exc_info)

    @property
    def text_stream(self) -> AsyncIterator[str]:
        return self._stream.__aiter__()

    async def until_done(self) -> None:
        async for _ in self._stream:
            pass

    async def get_final_message(self) -> SDKObject:
        await self.until_done()
        assert self._stream.response is not None
        return _message(self._stream.response, self._model)


class SyncMessages:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        """The Anthropic SDK's `messages.create`: a Message (`stream=True`: use `messages.stream`)."""
        request, stream, model = _anthropic(kwargs)
        if stream:
            raise InvalidRequest("messages.create(stream=True) is not supported here: use messages.stream(...)")
        return _message(self._client.complete_request(request), model)

    def stream(self, **kwargs: Any) -> MessageStream:
        request, _, model = _anthropic(kwargs)
        return MessageStream(self._client.stream_request(request), model)


class AsyncMessages:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, **kwargs: Any) -> Any:
        request, stream, model = _anthropic(kwargs)
        if stream:
            raise InvalidRequest("messages.create(stream=True) is not supported here: use messages.stream(...)")
        return _message(await self._client.complete_request(request), model)

    def stream(self, **kwargs: Any) -> AsyncMessageStream:
        request, _, model = _anthropic(kwargs)
        return AsyncMessageStream(self._client.stream_request(request), model)
