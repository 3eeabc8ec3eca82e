"""A request as the pipeline runs it, decided once (`Completions.prepare`):
validated, routed to a provider and model, optimized, with its cache key,
mode and namespace, and its deadline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from claif_client.protocol import CompletionRequest

from .errors import BadRequest
from .optimizer import Optimized
from .providers import Provider

if TYPE_CHECKING:
    from .callers import Caller

__all__ = ["CACHE_MODES", "Prepared"]

_ROLES = frozenset({"user", "assistant", "system", "tool"})
CACHE_MODES = frozenset({"use", "refresh", "bypass", "only"})


class Prepared:
    """A validated, routed request, with its cache key when the cache applies
    and its deadline in seconds."""

    __slots__ = ("request", "provider", "model", "key", "namespace", "mode", "timeout", "outcome", "started",
                 "optimized", "fallback", "front", "caller", "over_budget")

    def __init__(self, request: CompletionRequest, provider: Provider, model: str,
                 key: str | None, namespace: str, mode: str, timeout: float,
                 optimized: Optimized | None = None, front: str = "socket", caller: Caller | None = None,
                 over_budget: str | None = None) -> None:
        # The request as it goes upstream (after the optimizer).
        self.request = request
        # What the optimizer changed (reported in the reply), or None.
        self.optimized = optimized
        self.provider = provider
        self.model = model
        self.key = key
        self.namespace = namespace
        self.mode = mode
        self.timeout = timeout
        # How the answer came, for the metrics: ok (upstream), cached-exact, coalesced.
        self.outcome = "ok"
        self.started = time.perf_counter()
        # {"from", "to", "reason"} while a fallback model answers it (routing.fallbacks).
        self.fallback: dict[str, str] | None = None
        # Which front asked, for the metrics and the log: socket, openai, anthropic, responses.
        self.front = front
        # Whose project layer decided it (None: the daemon's configuration); a fallback is decided the same way.
        self.caller = caller
        # Why it may not go upstream (a budget reached, budgets.action refuse): a cached answer is still served.
        self.over_budget = over_budget

    @property
    def labels(self) -> tuple[str, str]:
        return self.provider.name, self.model

    def __repr__(self) -> str:
        return f"<Prepared {self.provider.name}/{self.model} mode={self.mode} key={(self.key or '-')[:12]}>"


def _validate(request: CompletionRequest) -> None:
    if not request.messages:
        raise BadRequest("messages must not be empty")
    for i, message in enumerate(request.messages):
        if message.role not in _ROLES:
            raise BadRequest(f"messages[{i}].role {message.role!r} is not one of {', '.join(sorted(_ROLES))}")
    if request.max_tokens is not None and request.max_tokens <= 0:
        raise BadRequest("max_tokens must be positive")
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        raise BadRequest("temperature must be between 0 and 2")
    if request.timeout is not None and request.timeout <= 0:
        raise BadRequest("timeout must be positive")
