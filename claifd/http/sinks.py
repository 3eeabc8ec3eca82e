"""Where an HTTP front answer goes, in the shape it was asked in: the
pipeline's sinks (completions.Sink) for the OpenAI and Anthropic wires,
whole (JSON) and streamed (server-sent events). The shapes themselves are
claif_client/shapes.py, shared with the client's SDK-shaped facade.

Each sink learns how its answer came (`x-claif-cache-status`) from the
prepared request (`status_of`), which the front sets before the pipeline
runs; a stream's headers go out with its first event.
"""

from __future__ import annotations

import time
from typing import Any

from claif_client.protocol import CompletionResponse
from claif_client.shapes import (
    anthropic_block_stop,
    anthropic_response,
    anthropic_stream_end,
    anthropic_stream_start,
    anthropic_text_delta,
    anthropic_text_start,
    openai_choices,
    openai_chunk,
    openai_finish,
    openai_response,
    openai_usage_chunk,
)

from ..completions import Prepared
from .server import Exchange

__all__ = ["Answer", "AnthropicJSON", "AnthropicStream", "OpenAIChoices", "OpenAIJSON", "OpenAIStream", "status_of"]

_OUTCOME_STATUS = {"cached-exact": "hit-exact", "cached-semantic": "hit-semantic", "coalesced": "coalesced"}


def status_of(prepared: Prepared | None, response: CompletionResponse | None = None) -> str:
    """x-claif-cache-status: hit-exact | hit-semantic | coalesced | miss."""
    if prepared is not None and prepared.outcome in _OUTCOME_STATUS:
        return _OUTCOME_STATUS[prepared.outcome]
    if response is not None and response.cached:
        return "hit-exact" if response.cached == "exact" else "hit-semantic"
    return "miss"


class Answer:
    """What every front sink has: its exchange, the answer's model name and
    id, the request whose outcome its status reports, headers of its own."""

    streaming = False

    def __init__(self, ex: Exchange, model: str, rid: str, headers: list[tuple[str, str]]) -> None:
        self.ex = ex
        self.model = model
        self.rid = rid
        self.headers = headers
        self.prepared: Prepared | None = None

    def _head(self, response: CompletionResponse | None = None) -> list[tuple[str, str]]:
        head = [("x-claif-cache-status", status_of(self.prepared, response)), *self.headers]
        fallback = response.fallback if response is not None else None
        if fallback is None and self.prepared is not None:
            fallback = self.prepared.fallback
        if fallback:  # x-claif-fallback: openai/gpt-4o-mini -> local/llama3.1:8b (rate_limited)
            head.append(("x-claif-fallback", f"{fallback['from']} -> {fallback['to']} ({fallback['reason']})"))
        return head

    async def delta(self, text: str) -> None:
        raise AssertionError("not streaming")


class OpenAIJSON(Answer):
    """One Chat Completion, whole."""

    async def done(self, response: CompletionResponse) -> None:
        doc = openai_response(response, self.model or response.model, self.rid, int(time.time()))
        await self.ex.respond(200, doc, self._head(response))


class AnthropicJSON(Answer):
    """One Message, whole."""

    async def done(self, response: CompletionResponse) -> None:
        await self.ex.respond(200, anthropic_response(response, self.model or response.model, self.rid),
                              self._head(response))


class OpenAIChoices(Answer):
    """n choices, whole: one Chat Completion once all are in (`finish`)."""

    async def done(self, response: CompletionResponse) -> None:
        pass

    async def finish(self, responses: list[CompletionResponse]) -> None:
        doc = openai_choices(responses, self.model or responses[0].model, self.rid, int(time.time()))
        await self.ex.respond(200, doc, self._head(responses[0]))


class OpenAIStream(Answer):
    """A streamed Chat Completion: its n choices' chunks on one event stream
    (`choice(i)` is the sink of choice i), then the usage when asked for,
    and [DONE] (`finish`)."""

    streaming = True

    def __init__(self, ex: Exchange, model: str, rid: str, headers: list[tuple[str, str]], n: int,
                 include_usage: bool) -> None:
        super().__init__(ex, model, rid, headers)
        self.created = int(time.time())
        self.include_usage = include_usage
        self.opened: set[int] = set()
        self.responses: list[CompletionResponse | None] = [None] * n

    def choice(self, index: int) -> _OpenAIChoice:
        return _OpenAIChoice(self, index)

    def chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return openai_chunk(self.rid, self.created, self.model, index, delta, finish, self.include_usage)

    async def begin(self, index: int) -> None:
        if not self.ex.started:
            await self.ex.start_sse(self._head())
        if index not in self.opened:
            self.opened.add(index)
            await self.ex.sse(self.chunk(index, {"role": "assistant", "content": "", "refusal": None}))

    async def done(self, response: CompletionResponse) -> None:
        raise AssertionError("a choice's sink ends a choice")

    async def finish(self) -> None:
        if self.include_usage:
            done = [r for r in self.responses if r is not None]
            usage = openai_choices(done, self.model, self.rid, self.created)["usage"]
            await self.ex.sse(openai_usage_chunk(self.rid, self.created, self.model, usage))
        await self.ex.sse("[DONE]")
        await self.ex.end()


class _OpenAIChoice:
    __slots__ = ("stream", "index")
    streaming = True

    def __init__(self, stream: OpenAIStream, index: int) -> None:
        self.stream = stream
        self.index = index

    async def delta(self, text: str) -> None:
        stream = self.stream
        await stream.begin(self.index)
        await stream.ex.sse(stream.chunk(self.index, {"content": text}))

    async def done(self, response: CompletionResponse) -> None:
        stream = self.stream
        stream.responses[self.index] = response
        await stream.begin(self.index)
        deltas, finish = openai_finish(response)
        for delta in deltas:
            await stream.ex.sse(stream.chunk(self.index, delta))
        await stream.ex.sse(stream.chunk(self.index, {}, finish))


class AnthropicStream(Answer):
    """A streamed Message: Anthropic's documented event sequence."""

    streaming = True

    def __init__(self, ex: Exchange, model: str, rid: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(ex, model, rid, headers)
        self.text_open = False

    async def _event(self, event: tuple[str, dict[str, Any]]) -> None:
        await self.ex.sse(event[1], event[0])

    async def begin(self) -> None:
        if not self.ex.started:
            await self.ex.start_sse(self._head())
            await self._event(anthropic_stream_start(self.rid, self.model))

    async def delta(self, text: str) -> None:
        await self.begin()
        if not self.text_open:
            self.text_open = True
            for event in anthropic_text_start(0):
                await self._event(event)
        await self._event(anthropic_text_delta(0, text))

    async def done(self, response: CompletionResponse) -> None:
        await self.begin()
        index = 0
        if self.text_open:
            await self._event(anthropic_block_stop(0))
            index = 1
        for event in anthropic_stream_end(response, index):
            await self._event(event)
        await self.ex.end()
