"""The request optimizer: what the daemon may change in a request before it
goes upstream, each change reported in the reply's `optimized` (sans-IO).

    model "auto"        -> a model chosen by rules (auto.py)          optimized.model
    complexity_hint     -> max_tokens, when the request names none   optimized.max_tokens
    longer than window  -> oldest turns left out (sessions' rules)   optimized.context

`optimizer.enabled: false` turns the last two off (an "auto" model must
still be chosen); `optimizer.max_tokens.<hint>: 0` and
`optimizer.trim_context: false` turn off one each.

Runs in `Completions.prepare`, before the cache key is computed: the key is
the key of what goes upstream, so an answer made under one max_tokens or
one trimmed context is never served for another.

Context trimming follows the sessions' rules (sessions/context.py): the
system prompt, the first user message, the newest message, and tool calls
together with their results are kept; older turns go first. The window is
`optimizer.context_windows` (longest matching "provider/model" pattern);
the answer's max_tokens (or the provider's default) and the tools'
definitions are held back from it. Token counts are estimates (4 characters
a token), so a window is filled to an estimate, reported as such.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import msgspec

from claif_client.protocol import CompletionRequest

from .config import Config, OptimizerConfig
from .sessions.context import estimate_text, estimate_tokens, trim

__all__ = ["optimize", "context_window", "Optimized"]

Optimized = dict[str, Any]

# Held back for the answer when neither the request nor the provider says.
DEFAULT_ANSWER_TOKENS = 4096


def optimize(request: CompletionRequest, provider: str, model: str, config: Config,
             optimized: Optimized) -> CompletionRequest:
    """`request` as it should go upstream to `provider`/`model`; what changed
    is added to `optimized`."""
    rules = config.optimizer
    if not rules.enabled:
        return request
    hint = request.complexity_hint
    if hint is not None and request.max_tokens is None:
        limit = getattr(rules.max_tokens, hint)
        if limit:
            request = msgspec.structs.replace(request, max_tokens=limit)
            optimized["max_tokens"] = {"value": limit, "rule": f"complexity_hint={hint}"}
    if rules.trim_context and len(request.messages) > 1:
        request = _fit(request, provider, model, config, optimized)
    return request


def context_window(rules: OptimizerConfig, provider: str, model: str) -> int:
    """The window of `provider/model`: the longest matching pattern's."""
    name = f"{provider}/{model}"
    best, window = -1, 0
    for pattern, tokens in rules.context_windows.items():
        if len(pattern) > best and fnmatch.fnmatchcase(name, pattern):
            best, window = len(pattern), tokens
    return window


def _fit(request: CompletionRequest, provider: str, model: str, config: Config,
         optimized: Optimized) -> CompletionRequest:
    window = context_window(config.optimizer, provider, model)
    if not window:
        return request
    answer = request.max_tokens
    if answer is None:
        # A provider whose API requires max_tokens sends its section's default.
        section = config.providers.get(provider)
        answer = section.default_max_tokens if section is not None and section.type == "anthropic" \
            else DEFAULT_ANSWER_TOKENS
    system = request.system if isinstance(request.system, str) or request.system is None \
        else msgspec.json.encode(request.system).decode()
    tools = estimate_text(msgspec.json.encode(request.tools).decode()) if request.tools else 0
    budget = window - answer - tools
    before = sum(estimate_tokens(m) for m in request.messages)
    if before + estimate_text(system) <= budget:
        return request
    kept, dropped = trim(request.messages, system, budget, recent=len(request.messages))
    if not dropped:
        return request
    optimized["context"] = {
        "dropped_messages": dropped,
        "kept_messages": len(kept),
        "estimated_tokens_before": before + estimate_text(system),
        "estimated_tokens_after": sum(estimate_tokens(m) for m in kept) + estimate_text(system),
        "window": window,
        "reserved_for_answer": answer,
    }
    return msgspec.structs.replace(request, messages=kept)
