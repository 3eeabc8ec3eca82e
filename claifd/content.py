"""Reading the text out of message content (a string, or content blocks)."""

from __future__ import annotations

from typing import Any

from claif_client.protocol import CompletionRequest

__all__ = ["text_of", "last_user_text"]

Content = str | list[dict[str, Any]] | None


def text_of(content: Content, sep: str = "") -> str:
    """The text of `content`: the string itself, or its text blocks joined by `sep`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return sep.join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def last_user_text(request: CompletionRequest, sep: str = " ") -> str:
    """The text of the newest user message ("" if there is none)."""
    for message in reversed(request.messages):
        if message.role == "user":
            return text_of(message.content, sep)
    return ""
