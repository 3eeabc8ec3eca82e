"""claifd: one local daemon between a user's programs and the LLM APIs they pay for."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
