"""What a provider is (how a model name finds one: registry.py).

A provider turns a `CompletionRequest` into a `CompletionResponse`. Streaming
uses a callback rather than an async generator: the provider awaits
`on_delta(text)` for each piece and returns the final response. That keeps
cancellation simple (no half-consumed generators to close) and lets callers
wrap the callback (recording a stream for the cache, counting bytes...).
"""

from __future__ import annotations

from typing import Any, Protocol

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..types import DeltaCallback

__all__ = ["Provider", "DeltaCallback"]

class Provider(Protocol):
    @property
    def name(self) -> str: ...

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse: ...

    async def stream(self, request: CompletionRequest, model: str, on_delta: DeltaCallback) -> CompletionResponse: ...

    def stats(self) -> dict[str, Any]: ...
