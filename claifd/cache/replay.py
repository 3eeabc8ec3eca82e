"""Replaying a cached answer as a stream of chunks."""

from __future__ import annotations

import re

from .entry import MemEntry

__all__ = ["replay_chunks", "split_for_replay"]

# A word and the whitespace after it, the usual grain of a model's stream.
_PIECES = re.compile(r"\S+\s*|\s+")


def split_for_replay(text: str) -> list[str]:
    """Pieces that concatenate back to `text` exactly."""
    return _PIECES.findall(text)


def replay_chunks(entry: MemEntry) -> list[str] | tuple[str, ...]:
    """A cached answer as stream chunks: the original boundaries when it was
    streamed, else word-sized pieces of its text."""
    if entry.chunks is not None:
        return entry.chunks
    return split_for_replay(entry.response().text)
