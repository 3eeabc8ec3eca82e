"""Upstream providers: where completions come from."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import DeltaCallback, Provider, resolve_model
from .echo import EchoProvider
from .openai import OpenAIProvider

__all__ = ["Provider", "DeltaCallback", "resolve_model", "EchoProvider", "AnthropicProvider", "OpenAIProvider"]
