"""Session rows as stored in SQLite, read back: shared by the store and by
salvage (which reads a damaged copy the same way, row by row)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from .model import SessionMessage

__all__ = ["ROW_ERRORS", "json_or_none", "lenient_text", "message_of"]

_content_dec = msgspec.msgpack.Decoder(str | list[dict[str, Any]])

# What a damaged row raises when it is decoded.
ROW_ERRORS = (msgspec.DecodeError, ValueError, TypeError, RecursionError)


def lenient_text(raw: bytes) -> str:
    """A text column, damaged bytes read as U+FFFD (a listing must not fail for them)."""
    return raw.decode("utf-8", "replace")


def json_or_none(text: str | None) -> Any:
    """Stored JSON metadata; None when it is damaged (a listing must not fail for it)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def message_of(role: str, content: bytes, t: float, tokens: int, meta: str | None, pinned: int,
               model: str | None) -> SessionMessage:
    """A `messages` row (from its `role` column on) as a message; ROW_ERRORS if it is damaged."""
    return SessionMessage(role=role, content=_content_dec.decode(content), time=t, tokens=tokens,
                          metadata=json.loads(meta) if meta else None, pinned=bool(pinned), model=model)
