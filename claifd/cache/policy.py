"""How long a cached answer lives (sans-IO).

Strategies (`cache.strategy`):

* `conservative` (default): every entry lives `cache.default_ttl`.
* `smart`: the TTL follows what the question is about, classified by cheap
  keyword rules on the last user message (first match wins, in this order):

  | kind       | rule (lower-cased text)                                        | TTL     |
  |------------|----------------------------------------------------------------|---------|
  | news       | today, latest, news, current, this week, yesterday, breaking, right now, stock price, weather | 15 min  |
  | code       | a ``` fence, or code words: function, python, javascript, typescript, rust, sql, regex, bug, stack trace, traceback, compile, `def `, `class ` | 1 day   |
  | creative   | poem, story, lyrics, joke, imagine, creative, fiction, haiku -- or temperature >= 0.9 | 1 hour  |
  | analysis   | analyze/analyse, compare, evaluate, pros and cons, summarize/summarise, review, assess, explain why | 1 day   |
  | factual    | anything else                                                  | 7 days  |

  Entries that keep being hit live longer: x1.5 after more than 5 hits, x2
  after more than 10, never beyond `cache.max_ttl`.
* `aggressive`: every entry lives `cache.max_ttl`.

A per-request `ttl` overrides the strategy and is not extended by hits.
"""

from __future__ import annotations

import re
from typing import Final

from claif_client.protocol import CompletionRequest

from ..config import CacheConfig
from ..content import last_user_text

__all__ = ["STRATEGIES", "SMART_TTLS", "classify", "base_ttl", "effective_ttl"]

STRATEGIES: Final = ("conservative", "smart", "aggressive")

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
SMART_TTLS: Final = {"news": 15 * MINUTE, "code": DAY, "creative": HOUR, "analysis": DAY, "factual": 7 * DAY}

_RULES: Final = [
    ("news", re.compile(r"\b(today|latest|news|current|this week|yesterday|breaking|right now|stock price|weather)\b")),
    ("code", re.compile(r"```|\b(function|python|javascript|typescript|rust|sql|regex|bug|stack trace|traceback|compile)\b|\bdef |\bclass ")),
    ("creative", re.compile(r"\b(poem|story|lyrics|joke|imagine|creative|fiction|haiku)s?\b")),
    ("analysis", re.compile(r"\b(analy[sz]e|compare|evaluate|pros and cons|summari[sz]e|review|assess|explain why)\b")),
]


def classify(request: CompletionRequest) -> str:
    text = last_user_text(request).lower()
    for kind, pattern in _RULES:
        if kind == "creative" and request.temperature is not None and request.temperature >= 0.9:
            return "creative"
        if pattern.search(text):
            return kind
    return "factual"


def base_ttl(strategy: str, request: CompletionRequest, default_ttl: float, max_ttl: float) -> float:
    """The TTL an entry starts with."""
    if request.cache is not None and request.cache.ttl is not None:
        return float(request.cache.ttl)
    if strategy == "smart":
        return min(SMART_TTLS[classify(request)], max_ttl)
    if strategy == "aggressive":
        return max_ttl
    return default_ttl


def effective_ttl(strategy: str, ttl: float, hits: int, max_ttl: float, fixed: bool = False) -> float:
    """The TTL after `hits` hits: only `smart`, non-fixed entries grow."""
    if strategy != "smart" or fixed:
        return ttl
    factor = 2.0 if hits > 10 else 1.5 if hits > 5 else 1.0
    return min(ttl * factor, max(max_ttl, ttl))


def ttl_cap(config: CacheConfig) -> float:
    """The longest a non-fixed entry may live under the current config."""
    if config.strategy == "conservative":
        return float(config.default_ttl)
    return float(config.max_ttl)


def entry_ttl(config: CacheConfig, ttl: float, hits: int, fixed: bool) -> float:
    """An entry's lifetime now: its strategy's, with its hits, within the cap."""
    lifetime = effective_ttl(config.strategy, ttl, hits, float(config.max_ttl), fixed)
    return lifetime if fixed else min(lifetime, ttl_cap(config))
