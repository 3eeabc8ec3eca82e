"""Upstream providers: where completions come from."""

from __future__ import annotations

from .base import DeltaCallback, Provider, resolve_model
from .echo import EchoProvider

__all__ = ["Provider", "DeltaCallback", "resolve_model", "EchoProvider"]
