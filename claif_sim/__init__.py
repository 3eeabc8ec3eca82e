"""claif-sim: the offline Anthropic + OpenAI upstream that every test, demo
and benchmark talks to over real loopback HTTP. Its own package: the daemon
never imports it, and it owns the h11 dependency."""

from __future__ import annotations

from .server import Faults, SimState, main, reply_text, serve

__all__ = ["SimState", "Faults", "serve", "main", "reply_text"]
