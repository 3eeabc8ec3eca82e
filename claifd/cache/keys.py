"""The cache key: SHA-256 over a canonical encoding of everything that can
change the answer, and nothing that cannot.

In the key: the namespace, the provider and the *resolved* model id (an alias
and its target share entries; two providers never do), the system prompt,
every message with every content block, max_tokens, temperature (rounded to
2 decimals), top_p, top_k, stop, tools, tool_choice and `extra` (which
carries thinking/reasoning settings, response formats and any other
provider-specific field).

Left out, because they cannot change the output: metadata (trace ids and the
like), the stream flag, timeouts, the cache control itself and the session id
(a session's context is in the messages).

Canonical means: JSON with object keys sorted at every depth, numbers in
msgspec's shortest round-trip form, and numeric sampling parameters turned
into floats first, so `temperature=1` and `temperature=1.0` agree. Missing
and null are the same (fields are omitted when unset). See docs/CACHING.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from claif_client.protocol import CompletionRequest, Message

__all__ = ["cache_key", "KEY_VERSION", "DEFAULT_NAMESPACE", "canonical_bytes"]

# Part of every key: bump it when the encoding below changes, so old disk
# entries are simply never matched again instead of being misread.
KEY_VERSION = 2  # 2: text parts and the system prompt keyed without their outer whitespace
DEFAULT_NAMESPACE = "default"


class _KeyMaterial(msgspec.Struct, omit_defaults=True):
    v: int
    namespace: str
    provider: str
    model: str
    messages: list[Message]
    system: str | list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    extra: dict[str, Any] | None = None


def _float(value: float | None, digits: int | None = None) -> float | None:
    if value is None:
        return None
    return round(float(value), digits) if digits is not None else float(value)


def _stripped(content: Any) -> Any:
    """Text without its leading and trailing whitespace ("  What is X?\n" is
    "What is X?"); inner whitespace is kept: code depends on it."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        return [{**part, "text": part["text"].strip()} if part.get("type") == "text" and isinstance(
            part.get("text"), str) else part for part in content]
    return content


def _messages(messages: list[Message]) -> list[Message]:
    out = messages
    for i, m in enumerate(messages):
        content = _stripped(m.content)
        if content != m.content:
            if out is messages:
                out = list(messages)
            out[i] = msgspec.structs.replace(m, content=content)
    return out


def canonical_bytes(provider: str, model: str, request: CompletionRequest, namespace: str) -> bytes:
    material = _KeyMaterial(
        v=KEY_VERSION,
        namespace=namespace,
        provider=provider,
        model=model,
        messages=_messages(request.messages),
        system=_stripped(request.system),
        max_tokens=request.max_tokens,
        temperature=_float(request.temperature, 2),
        top_p=_float(request.top_p),
        top_k=request.top_k,
        stop=request.stop,
        tools=request.tools,
        tool_choice=request.tool_choice,
        extra=request.extra or None,
    )
    return msgspec.json.encode(material, order="sorted")


def cache_key(provider: str, model: str, request: CompletionRequest, namespace: str = DEFAULT_NAMESPACE) -> str:
    return hashlib.sha256(canonical_bytes(provider, model, request, namespace)).hexdigest()
