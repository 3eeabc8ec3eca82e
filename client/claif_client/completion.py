"""The request and response models shared by every provider and both
ends: a completion request and its answer, their parts (messages, usage,
cache control, a semantic match), a batch's items and progress. Encoded
with msgspec inside the frames of protocol.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Numeric ranges checked when a message is decoded: a NaN, an infinity or a
# 70-bit integer is refused as `bad_request` before any code sees it.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=10 * 365 * 86400)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86400)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Sampling = Annotated[float, msgspec.Meta(ge=0, le=1000)]
Complexity = Literal["simple", "moderate", "complex"]



class Message(msgspec.Struct, omit_defaults=True):
    """One conversation turn: text, or a list of provider content blocks."""

    role: str
    content: str | list[dict[str, Any]]


class Usage(msgspec.Struct):
    input_tokens: Count = 0
    output_tokens: Count = 0
    # The provider's prompt cache: tokens read from it (Anthropic's
    # cache_read_input_tokens, OpenAI's prompt_tokens_details.cached_tokens)
    # and written to it (Anthropic's cache_creation_input_tokens).
    cache_read_input_tokens: Count = 0
    cache_creation_input_tokens: Count = 0


class CacheControl(msgspec.Struct, omit_defaults=True):
    """Per-request cache behaviour: use, refresh, bypass or only."""

    mode: str = "use"
    ttl: Seconds | None = None
    namespace: str | None = None
    # The semantic tier for this request: True/False, None follows cache.semantic.enabled.
    semantic: bool | None = None


class SemanticMatch(msgspec.Struct):
    """Why a semantic hit was served: how similar, and to which earlier prompt."""

    similarity: float
    prompt: str
    key: str


class CompletionRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    messages: list[Message]
    model: str | None = None
    system: str | list[dict[str, Any]] | None = None
    max_tokens: PositiveCount | None = None
    temperature: Sampling | None = None
    top_p: Sampling | None = None
    top_k: Count | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    metadata: dict[str, Any] | None = None
    # Provider-specific fields passed through to the upstream request body.
    extra: dict[str, Any] | None = None
    cache: CacheControl | None = None
    session: str | None = None
    # Seconds the daemon may spend on this request; None uses client.timeout.
    timeout: PositiveSeconds | None = None
    # How demanding the request is: picks the model under `model: "auto"` and
    # a max_tokens default (see the daemon's `optimizer.*` configuration).
    complexity_hint: Complexity | None = None


class CompletionResponse(msgspec.Struct, kw_only=True):
    text: str
    model: str
    id: str = ""
    content: list[dict[str, Any]] = []
    stop_reason: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    # False, or how the answer came from the cache: "exact" or "semantic".
    cached: bool | str = False
    # The answer's cache key, when the cache applied (for `cache.delete`).
    cache_key: str | None = None
    # For cached == "semantic": the similarity and the prompt that matched.
    semantic: SemanticMatch | None = None
    # What the daemon's optimizer changed in this request (model chosen,
    # max_tokens set, context trimmed), and why; None when nothing.
    optimized: dict[str, Any] | None = None
    # Answered by a fallback model (routing.fallbacks): {"from", "to", "reason"}.
    fallback: dict[str, str] | None = None


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    retry_after: float | None = None
    details: dict[str, Any] | None = None


class BatchItem(msgspec.Struct, omit_defaults=True):
    """One batch result: a response, or the error that item ended with."""

    index: int
    response: CompletionResponse | None = None
    error: ErrorInfo | None = None


class BatchProgress(msgspec.Struct, omit_defaults=True):
    index: int
    ok: bool
    done: int
    total: int
    # The finished item itself, when the batch asked for `stream_results`.
    item: BatchItem | None = None
