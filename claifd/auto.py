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

from claif_client.protocol import CompletionRequest

from .config import AutoConfig
from .content import last_user_text, text_of

__all__ = ["AUTO", "choose_model"]

AUTO = "auto"


def choose_model(request: CompletionRequest, rules: AutoConfig) -> tuple[str, str]:
    """(model, the rule that chose it)."""
    texts = [text_of(m.content, " ") for m in request.messages]
    total = sum(len(t) for t in texts) + len(text_of(request.system, " "))
    last_user = last_user_text(request).lower()
    if any(k in last_user for k in rules.capable_keywords) or total > rules.long_chars:
        return rules.capable, "capable"
    if total < rules.short_chars and not any("```" in t for t in texts):
        return rules.fast, "fast"
    return rules.balanced, "balanced"
