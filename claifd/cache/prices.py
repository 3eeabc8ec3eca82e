"""Estimated prices, to report what the cache saved.

USD per million tokens, list prices of the providers' public price pages at
the time of writing; they are estimates for reporting only and can be
overridden or extended with the config's `prices` table:
`{"prices": {"openai/my-model": {"input": 1.0, "output": 2.0}}}`.
Models without a price still count their saved tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_PRICES", "PriceTable", "cost_usd"]

# A name also covers its dated ids: "anthropic/claude-3-5-sonnet" prices
# "anthropic/claude-3-5-sonnet-20241022" (see `_lookup`).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "anthropic/claude-opus-4-1": (15.0, 75.0),
    "anthropic/claude-opus-4": (15.0, 75.0),
    "anthropic/claude-sonnet-4-5": (3.0, 15.0),
    "anthropic/claude-sonnet-4": (3.0, 15.0),
    "anthropic/claude-haiku-4-5": (1.0, 5.0),
    "anthropic/claude-3-7-sonnet": (3.0, 15.0),
    "anthropic/claude-3-5-sonnet": (3.0, 15.0),
    "anthropic/claude-3-5-haiku": (0.8, 4.0),
    "anthropic/claude-3-opus": (15.0, 75.0),
    "anthropic/claude-3-haiku": (0.25, 1.25),
    "openai/gpt-4o": (2.5, 10.0),
    "openai/gpt-4o-mini": (0.15, 0.6),
    "openai/gpt-4.1": (2.0, 8.0),
    "openai/gpt-4.1-mini": (0.4, 1.6),
    "openai/gpt-4.1-nano": (0.1, 0.4),
    "openai/gpt-4-turbo": (10.0, 30.0),
    "openai/gpt-3.5-turbo": (0.5, 1.5),
    "openai/o1": (15.0, 60.0),
    "openai/o3": (2.0, 8.0),
    "openai/o3-mini": (1.1, 4.4),
    "openai/o4-mini": (1.1, 4.4),
}


def _lookup(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """Exact name, else the longest entry the name extends with a dash
    (`anthropic/claude-sonnet-4-5-20250929` uses `anthropic/claude-sonnet-4-5`)."""
    if model in table:
        return table[model]
    best = max((k for k in table if model.startswith(k + "-")), key=len, default=None)
    return table[best] if best is not None else None


def cost_usd(model: str, input_tokens: int, output_tokens: int, overrides: Mapping[str, Mapping[str, float]]) -> float:
    custom = {k: (float(v.get("input", 0.0)), float(v.get("output", 0.0))) for k, v in overrides.items()}
    price = _lookup(model, custom) or _lookup(model, DEFAULT_PRICES)
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


class PriceTable:
    """`cost_usd` with the overrides parsed once and each model's price memoised
    (it is called on every cache hit)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]]) -> None:
        self._custom = {k: (float(v.get("input", 0.0)), float(v.get("output", 0.0))) for k, v in overrides.items()}
        self._memo: dict[str, tuple[float, float] | None] = {}

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        try:
            price = self._memo[model]
        except KeyError:
            price = self._memo[model] = _lookup(model, self._custom) or _lookup(model, DEFAULT_PRICES)
        if price is None:
            return 0.0
        return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
