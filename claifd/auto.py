"""`model: "auto"`: pick a model by rules, after the design document.

In order (the first rule that matches wins):

0. the request says how demanding it is (`complexity_hint`): `simple` ->
   `auto.fast`, `moderate` -> `auto.balanced`, `complex` -> `auto.capable`
   (the caller knows best);
1. the last user message contains one of `auto.capable_keywords` ("analyze",
   "compare", "step by step"...), or the whole prompt is longer than
   `auto.long_chars` -> `auto.capable` (the most capable model);
2. the prompt holds code in any form (see `looks_like_code`) -> `auto.balanced`;
3. the prompt is shorter than `auto.short_chars` -> `auto.fast`;
4. anything else -> `auto.balanced`.

(The design document's version tested "short" before "analyze", so a short
"analyze this" went to the fast model; here the keyword wins. It looked for
code only in ``` fences; here inline code and bare code lines count too.)
"""

from __future__ import annotations

import re

from claif_client.protocol import CompletionRequest

from .config import AutoConfig
from .content import last_user_text, text_of

__all__ = ["AUTO", "choose_model", "looks_like_code"]

AUTO = "auto"

_BY_HINT = {"simple": "fast", "moderate": "balanced", "complex": "capable"}

# Signs of code, each enough on its own: a fence, inline `code(...)` or
# `a.b`-like spans, and lines that only code has (definitions, imports,
# statements ending in ; or {, arrows, comparisons, shell prompts, SQL, tags).
_CODE = re.compile(
    r"```"
    r"|`[^`\n]*[(){}\[\];=<>.:/_][^`\n]*`"
    r"|^\s*(?:def|class|fn|func|function|import|from\s+\S+\s+import|#include|package|using|public|private|"
    r"const|let|var|return|if\s*\(|for\s*\(|while\s*\(|SELECT\s.+\sFROM|\$\s+\w)"
    r"|[;{]\s*$"
    r"|\w+\([^()\n]*\)\s*(?:\{|=>|->|;|:\s*$)"
    r"|\b(?:const|let|var|auto|int|char)\s+\w+\s*="
    r"|=>|->|::|!==|===|&&|\|\|"
    r"|</?[a-zA-Z][\w-]*(?:\s[^<>]*)?>",
    re.MULTILINE,
)


def looks_like_code(text: str) -> bool:
    return _CODE.search(text) is not None


def choose_model(request: CompletionRequest, rules: AutoConfig) -> tuple[str, str]:
    """(model, the rule that chose it)."""
    hint = request.complexity_hint
    if hint is not None:
        return getattr(rules, _BY_HINT[hint]), f"complexity_hint={hint}"
    texts = [text_of(m.content, " ") for m in request.messages]
    total = sum(len(t) for t in texts) + len(text_of(request.system, " "))
    last_user = last_user_text(request).lower()
    if any(k in last_user for k in rules.capable_keywords):
        return rules.capable, "keyword"
    if total > rules.long_chars:
        return rules.capable, "long"
    if any(looks_like_code(t) for t in texts):
        return rules.balanced, "code"
    if total < rules.short_chars:
        return rules.fast, "short"
    return rules.balanced, "balanced"
