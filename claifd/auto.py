"""`model: "auto"`: pick a model by rules, after the design document.

In order (the first rule that matches wins):

1. the last user message contains one of `auto.capable_keywords` ("analyze",
   "compare", "step by step"...), or the whole prompt is longer than
   `auto.long_chars` -> `auto.capable` (the most capable model);
2. the prompt is shorter than `auto.short_chars` and holds no code fence ->
   `auto.fast`;
3. anything else -> `auto.balanced`.

(The design document's version tested "short" before "analyze", so a short
"analyze this" went to the fast model; here the keyword wins.)
"""

from __future__ import annotations

from typing import Any

from claif_client.protocol import CompletionRequest

from .config import AutoConfig

__all__ = ["AUTO", "choose_model"]

AUTO = "auto"


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def choose_model(request: CompletionRequest, rules: AutoConfig) -> tuple[str, str]:
    """(model, the rule that chose it)."""
    texts = [_text(m.content) for m in request.messages]
    total = sum(len(t) for t in texts) + len(_text(request.system))
    last_user = next((_text(m.content) for m in reversed(request.messages) if m.role == "user"), "").lower()
    if any(k in last_user for k in rules.capable_keywords) or total > rules.long_chars:
        return rules.capable, "capable"
    if total < rules.short_chars and not any("```" in t for t in texts):
        return rules.fast, "fast"
    return rules.balanced, "balanced"
