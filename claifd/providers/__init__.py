"""Upstream providers: where completions come from. A provider type is a
module here and a line of registry.py."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import DeltaCallback, Provider
from .echo import EchoProvider
from .openai import OpenAIProvider
from .registry import TYPES, Providers, provider_of, resolve_model

__all__ = ["Provider", "DeltaCallback", "resolve_model", "provider_of", "EchoProvider", "AnthropicProvider",
           "OpenAIProvider", "TYPES", "Providers"]
