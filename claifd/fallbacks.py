"""When a model fails before its answer started, the next one of
`routing.fallbacks` answers instead.

    routing.fallbacks: {"openai/gpt-4o-mini": ["local/llama3.1:8b", "anthropic/claude-haiku-4-5"]}

A failure falls back when the provider gave no answer worth showing: a 429
or an overload after its retries, a 5xx, a timeout, a connection that
failed, an open circuit. Never after a streamed byte (the caller already
has part of an answer), and never for a request the provider refused as
such (a 400: the next model would refuse it too) or a missing key.

The chain is looked up by the name the request used (an alias, a bare id)
and then by `provider/model`; a fallback's own chain is not followed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from .config import Config
from .errors import CircuitOpen, ClaifdError, RateLimited, TlsError, UpstreamError, UpstreamTimeout
from .perf import Perf
from .prepared import Prepared
from .types import DeltaCallback

__all__ = ["Streamed", "call", "chain", "reason", "upstream"]

log = structlog.get_logger("claifd.fallbacks")


async def upstream(prepared: Prepared, on_delta: DeltaCallback | None) -> CompletionResponse:
    """The provider's call, whole or streamed."""
    if on_delta is None:
        return await prepared.provider.complete(prepared.request, prepared.model)
    return await prepared.provider.stream(prepared.request, prepared.model, on_delta)


Send = Callable[[Prepared, "DeltaCallback | None"], Awaitable[CompletionResponse]]


async def call(prepared: Prepared, on_delta: DeltaCallback | None, streamed: Callable[[], bool], config: Config,
               prepare: Callable[[CompletionRequest, Prepared], Prepared],
               perf: Perf, send: Send = upstream) -> tuple[CompletionResponse, Prepared, dict[str, str] | None]:
    """The provider's call (`send`), then each fallback in turn while the
    failure falls back: (the answer, the request that made it -- cache it
    under that one's key --, and {"from", "to", "reason"} when a fallback
    made it)."""
    try:
        return await send(prepared, on_delta), prepared, None
    except ClaifdError as exc:
        why = reason(exc)
        targets = chain(config, prepared.request, prepared.provider.name, prepared.model) if why else []
        if why is None or not targets or streamed():
            raise
        failed, error = f"{prepared.provider.name}/{prepared.model}", exc
    tried: list[str] = []
    for target in targets:
        try:
            alt = prepare(msgspec.structs.replace(prepared.request, model=target), prepared)
            # Known before its first byte: a stream's headers say so.
            prepared.fallback = {"from": failed, "to": f"{alt.provider.name}/{alt.model}", "reason": why}
            response = await send(alt, on_delta)
        except ClaifdError as exc:
            prepared.fallback = None
            log.warning("fallback failed too", failed=failed, fallback=target, error=exc.message)
            if streamed():
                raise
            tried.append(target)
            continue
        made = f"{alt.provider.name}/{alt.model}"
        perf.fallback(failed, made, why)
        log.warning("answered by a fallback", failed=failed, fallback=made, reason=why, error=error.message)
        return response, alt, prepared.fallback
    # Every fallback failed too: the caller sees why its own model failed (each fallback's failure is logged).
    error.details = {**(error.details or {}), "fallbacks_failed": tried}
    raise error


def chain(config: Config, request: CompletionRequest, provider: str, model: str) -> list[str]:
    """The models to try, in order, after `provider/model` failed."""
    table = config.routing.fallbacks
    if not table:
        return []
    asked = request.model or config.client.model
    for name in (asked, f"{provider}/{model}"):
        found = table.get(name)
        if found:
            return [m for m in found if m not in (asked, f"{provider}/{model}")]
    return []


def reason(error: BaseException) -> str | None:
    """Why a failure falls back ("rate_limited", "overloaded", "server_error",
    "timeout", "connection", "circuit_open"), or None when it does not."""
    if not isinstance(error, ClaifdError):
        return None
    details: dict[str, Any] = error.details or {}
    status = details.get("status")
    if isinstance(error, CircuitOpen):
        return "circuit_open"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, TlsError) or details.get("limit"):
        return None
    if isinstance(status, int):
        return "server_error" if status >= 500 else None
    if type(error) is UpstreamError:  # no HTTP answer at all, or one that was not one
        return "connection" if "connect" in error.message else "upstream_error"
    return None


class Streamed:
    """Whether a delta went out yet (a failure after one never falls back)."""

    def __init__(self, on_delta: DeltaCallback | None) -> None:
        self._on_delta = on_delta
        self.sent = False

    def __call__(self) -> bool:
        return self.sent

    async def forward(self, text: str) -> None:
        self.sent = True
        assert self._on_delta is not None
        await self._on_delta(text)
