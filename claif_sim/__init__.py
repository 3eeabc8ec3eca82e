"""claif-sim: the offline Anthropic + OpenAI upstream that every test, demo
and benchmark talks to over real loopback HTTP. Its own package: the daemon
never imports it, and it owns the h11 dependency."""

from __future__ import annotations

from .answers import reply_text
from .faults import Faults, SimState
from .server import main, serve

__all__ = ["SimState", "Faults", "serve", "main", "reply_text"]
