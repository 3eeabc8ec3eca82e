"""The offline `echo` provider: deterministic answers, streamed word by word.

It answers "echo: " followed by the last user message's text, so tests and
demos can predict the reply exactly, and it needs no key or network. Token
counts are whitespace-separated words. Two extras make it useful as a slow
or failing fake: `extra={"delay_ms": N}` waits N ms before each word, and
`extra={"fail": "upstream_error"}` (or "rate_limited", "timeout") fails.
"""

from __future__ import annotations

import re
from typing import ClassVar

import anyio

from claif_client.protocol import CompletionRequest, CompletionResponse, Usage

from ..content import text_of
from ..errors import RateLimited, UpstreamError, UpstreamTimeout
from ..types import UpstreamCounters
from .base import DeltaCallback

__all__ = ["EchoProvider"]

_WORDS = re.compile(r"\S+\s*|\s+")
_FAILURES = {"upstream_error": UpstreamError, "rate_limited": RateLimited, "timeout": UpstreamTimeout}


def _count_words(text: str) -> int:
    return len(text.split())


class EchoProvider:
    name: ClassVar[str] = "echo"

    def __init__(self, counters: UpstreamCounters) -> None:
        self.counters = counters
        self.requests = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests}

    def _answer(self, request: CompletionRequest, model: str) -> tuple[list[str], CompletionResponse]:
        self.requests += 1
        self.counters.requests += 1
        extra = request.extra or {}
        failure = extra.get("fail")
        if failure:
            self.counters.errors += 1
            raise _FAILURES.get(failure, UpstreamError)(f"echo provider asked to fail with {failure!r}")
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        pieces = _WORDS.findall("echo: " + text_of(last_user.content if last_user else None, " "))
        stop_reason = "end_turn"
        if request.max_tokens is not None:
            words = [p for p in pieces if not p.isspace()]
            if len(words) > request.max_tokens:
                pieces, stop_reason = words[: request.max_tokens], "max_tokens"
        text = "".join(pieces)
        prompt = " ".join(text_of(m.content, " ") for m in request.messages) + " " + text_of(request.system, " ")
        response = CompletionResponse(
            id=f"echo-{self.requests}",
            model=f"echo/{model}",
            text=text,
            content=[{"type": "text", "text": text}],
            stop_reason=stop_reason,
            usage=Usage(input_tokens=_count_words(prompt), output_tokens=_count_words(text)),
        )
        return pieces, response

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        pieces, response = self._answer(request, model)
        delay = float((request.extra or {}).get("delay_ms", 0)) / 1000
        if delay:
            await anyio.sleep(delay * len(pieces))
        return response

    async def stream(self, request: CompletionRequest, model: str, on_delta: DeltaCallback) -> CompletionResponse:
        pieces, response = self._answer(request, model)
        delay = float((request.extra or {}).get("delay_ms", 0)) / 1000
        for piece in pieces:
            if delay:
                await anyio.sleep(delay)
            await on_delta(piece)
        return response

    def __repr__(self) -> str:
        return f"<EchoProvider requests={self.requests}>"
