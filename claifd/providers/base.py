"""What a provider is, and how a model name finds one.

A provider turns a `CompletionRequest` into a `CompletionResponse`. Streaming
uses a callback rather than an async generator: the provider awaits
`on_delta(text)` for each piece and returns the final response. That keeps
cancellation simple (no half-consumed generators to close) and lets callers
wrap the callback (recording a stream for the cache, counting bytes...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..errors import BadRequest
from ..types import DeltaCallback

__all__ = ["Provider", "DeltaCallback", "resolve_model"]

class Provider(Protocol):
    name: ClassVar[str]

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse: ...

    async def stream(self, request: CompletionRequest, model: str, on_delta: DeltaCallback) -> CompletionResponse: ...

    def stats(self) -> dict[str, int]: ...


def resolve_model(name: str | None, default: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    """`provider/model`, an alias from the `models` table, or the default -> (provider, model)."""
    chosen = name or default
    seen = {chosen}
    while chosen in aliases:
        chosen = aliases[chosen]
        if chosen in seen:
            raise BadRequest(f"model alias loop through {chosen!r}")
        seen.add(chosen)
    provider, sep, model = chosen.partition("/")
    if not sep:
        guessed = provider_of(chosen)
        if guessed is not None:
            return guessed, chosen
    if not sep or not provider or not model:
        raise BadRequest(
            f"model {chosen!r} is neither PROVIDER/MODEL, a known model id (claude-..., gpt-..., o1/o3/o4...) "
            "nor an alias from the config's models table"
        )
    return provider, model


# Bare model ids as people type them, by the prefixes the providers use.
_PREFIXES = (("claude-", "anthropic"), ("gpt-", "openai"), ("chatgpt-", "openai"), ("o1", "openai"),
             ("o3", "openai"), ("o4", "openai"), ("text-embedding-", "openai"))


def provider_of(model: str) -> str | None:
    """The provider of a bare model id ("claude-3-5-haiku-20241022" -> "anthropic"), or None."""
    for prefix, provider in _PREFIXES:
        if model.startswith(prefix) and (len(prefix) > 2 or len(model) == 2 or model[2] in "-."):
            return provider
    return None
