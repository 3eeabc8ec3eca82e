"""Replaying an answer that was not streamed as a stream of chunks."""

from __future__ import annotations

import re

__all__ = ["split_for_replay"]

# A word and the whitespace after it, the usual grain of a model's stream.
_PIECES = re.compile(r"\S+\s*|\s+")


def split_for_replay(text: str) -> list[str]:
    """Pieces that concatenate back to `text` exactly."""
    return _PIECES.findall(text)
