"""Prices, to count what calls cost, what the cache saved and what the
provider's prompt cache saved.

USD per million tokens -- input, output, prompt-cache write and prompt-cache
read -- list prices of the providers' public price pages as of
`PRICES_AS_OF`. The config's `prices` table overrides or extends them:
`{"prices": {"openai/my-model": {"input": 1.0, "output": 2.0}}}`, a name
or an fnmatch pattern (`"local/*"`: the longest matching pattern wins); a
cache price it leaves out follows the provider's rule (Anthropic: writes
1.25x input, reads 0.1x; others: writes at the input price, reads half).
A model with no price is *unpriced*: its calls are counted as such, never
as free (the `echo` provider is local and free).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "Price", "PriceTable", "cost_usd", "FREE_PROVIDERS"]

PRICES_AS_OF = "2025-11-01"
# Providers that cost nothing (local).
FREE_PROVIDERS = frozenset({"echo"})


class Price(NamedTuple):
    input: float
    output: float
    cache_write: float
    cache_read: float


def _anthropic(input: float, output: float) -> Price:
    return Price(input, output, input * 1.25, input * 0.1)


def _openai(input: float, output: float, cached: float | None) -> Price:
    return Price(input, output, input, cached if cached is not None else input)


# A name also covers its dated ids: "anthropic/claude-3-5-sonnet" prices
# "anthropic/claude-3-5-sonnet-20241022" (see `_lookup`).
DEFAULT_PRICES: dict[str, Price] = {
    "anthropic/claude-opus-4-1": _anthropic(15.0, 75.0),
    "anthropic/claude-opus-4": _anthropic(15.0, 75.0),
    "anthropic/claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "anthropic/claude-sonnet-4": _anthropic(3.0, 15.0),
    "anthropic/claude-haiku-4-5": _anthropic(1.0, 5.0),
    "anthropic/claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "anthropic/claude-3-5-sonnet": _anthropic(3.0, 15.0),
    "anthropic/claude-3-5-haiku": _anthropic(0.8, 4.0),
    "anthropic/claude-3-opus": _anthropic(15.0, 75.0),
    "anthropic/claude-3-haiku": _anthropic(0.25, 1.25),
    "openai/gpt-4o": _openai(2.5, 10.0, 1.25),
    "openai/gpt-4o-mini": _openai(0.15, 0.6, 0.075),
    "openai/gpt-4.1": _openai(2.0, 8.0, 0.5),
    "openai/gpt-4.1-mini": _openai(0.4, 1.6, 0.1),
    "openai/gpt-4.1-nano": _openai(0.1, 0.4, 0.025),
    "openai/gpt-4-turbo": _openai(10.0, 30.0, None),
    "openai/gpt-3.5-turbo": _openai(0.5, 1.5, None),
    "openai/o1": _openai(15.0, 60.0, 7.5),
    "openai/o3": _openai(2.0, 8.0, 0.5),
    "openai/o3-mini": _openai(1.1, 4.4, 0.55),
    "openai/o4-mini": _openai(1.1, 4.4, 0.275),
    "openai/text-embedding-3-small": _openai(0.02, 0.0, None),
    "openai/text-embedding-3-large": _openai(0.13, 0.0, None),
    "openai/text-embedding-ada-002": _openai(0.10, 0.0, None),
}


def _lookup(model: str, table: Mapping[str, Price]) -> Price | None:
    """Exact name, else the longest entry the name extends with a dash
    (`anthropic/claude-sonnet-4-5-20250929` uses `anthropic/claude-sonnet-4-5`)."""
    if model in table:
        return table[model]
    best = max((k for k in table if model.startswith(k + "-")), key=len, default=None)
    return table[best] if best is not None else None


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def _configured(name: str, entry: Mapping[str, Any]) -> Price:
    """A config `prices` entry, its missing cache prices by the provider's rule."""
    input, output = float(entry.get("input") or 0.0), float(entry.get("output") or 0.0)
    rule = _anthropic(input, output) if name.startswith("anthropic/") else Price(input, output, input, input / 2)
    write, read = entry.get("cache_write"), entry.get("cache_read")
    return Price(input, output, rule.cache_write if write is None else float(write),
                 rule.cache_read if read is None else float(read))


def cost_usd(model: str, input_tokens: int, output_tokens: int, overrides: Mapping[str, Mapping[str, Any]]) -> float:
    return PriceTable(overrides).cost(model, input_tokens, output_tokens)


class PriceTable:
    """The prices with the config's overrides parsed once and each model's
    price memoised (it is called on every cache hit)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        custom = {k: _configured(k, v) for k, v in overrides.items()}
        self._custom = {k: v for k, v in custom.items() if not _is_pattern(k)}
        # Patterns ("openai/ft:*", "local/*"), longest first: the most specific wins.
        self._patterns = sorted(((k, v) for k, v in custom.items() if _is_pattern(k)), key=lambda kv: -len(kv[0]))
        self._memo: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The price of "provider/model", or None (unpriced)."""
        try:
            return self._memo[model]
        except KeyError:
            price = self._memo[model] = _lookup(model, self._custom) or next(
                (v for k, v in self._patterns if fnmatch.fnmatchcase(model, k)), None) or _lookup(
                model, DEFAULT_PRICES) or (Price(0.0, 0.0, 0.0, 0.0) if model.split("/", 1)[0] in FREE_PROVIDERS
                                           else None)
            return price

    def cost(self, model: str, input_tokens: int, output_tokens: int, cache_write: int = 0,
             cache_read: int = 0) -> float:
        """USD of a call (0 for an unpriced model: see `price`). Input tokens
        are those neither written to nor read from the prompt cache."""
        price = self.price(model)
        if price is None:
            return 0.0
        return (input_tokens * price.input + output_tokens * price.output + cache_write * price.cache_write
                + cache_read * price.cache_read) / 1_000_000

    def prompt_cache_saved(self, model: str, cache_write: int, cache_read: int) -> float:
        """What the provider's prompt cache saved on a call, net of its write
        premium (negative when writes cost more than reads saved so far)."""
        price = self.price(model)
        if price is None:
            return 0.0
        return (cache_read * (price.input - price.cache_read) - cache_write * (price.cache_write - price.input)) \
            / 1_000_000
