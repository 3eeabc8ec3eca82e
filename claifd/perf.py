"""The performance monitor: what every request, upstream call and token cost.

Recorded on the hot path, so recording is a few dictionary and list
operations per request, no locks and no allocation beyond a label tuple the
first time a label combination is seen (a memory hit pays about a
microsecond: `bench/bench_metrics.py` measures it on and off in one run).
Rendering (Prometheus histograms, rates, percentiles) happens only when
someone asks: `claif metrics`, a scrape, `claif status`.

    requests        by (method, provider, model, outcome), with a duration
                    histogram by (method, provider, model); outcome is ok,
                    cached-exact, cached-semantic, coalesced, or an error code
    upstream calls  duration by (provider, model); attempts by (provider, HTTP
                    status or "error"); retries by provider; calls that
                    failed in the end, in a time window for the health check
    first token     time to the first streamed text, by (provider, model)
    tokens, cost    by (provider, model): what the providers billed (cache
                    hits cost nothing and are counted as savings by the cache)

Buckets run from 100 us (a memory hit) to 120 s (a long generation).
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Mapping
from typing import Any

from .cache.prices import PriceTable

__all__ = ["Perf", "Histogram", "RateWindow", "BUCKETS"]

_monotonic = time.monotonic

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Counts per bucket (not cumulative until rendered), their sum and count."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum
        self.count += other.count

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus `le` buckets: observations <= each bound, then +Inf."""
        out, total = [], 0
        for bound, n in zip([*(repr(b) for b in BUCKETS), "+Inf"], self.counts):
            total += n
            out.append((bound, total))
        return out

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.sum:.6f}>"


class RateWindow:
    """Events per second over the last seconds (up to `span`), in a ring of
    one-second slots: O(1) to add, O(span) to read."""

    __slots__ = ("span", "counts", "stamps")

    def __init__(self, span: int = 300) -> None:
        self.span = span
        self.counts = [0] * span
        self.stamps = [-1] * span

    def add(self, now: float, n: int = 1) -> None:
        second = int(now)
        i = second % self.span
        if self.stamps[i] != second:
            self.stamps[i] = second
            self.counts[i] = 0
        self.counts[i] += n

    def total(self, now: float, window: int) -> int:
        """Events in the last `window` seconds (the current one included)."""
        newest = int(now)
        return sum(c for c, s in zip(self.counts, self.stamps) if newest - window < s <= newest)

    def rate(self, now: float, window: int) -> float:
        return self.total(now, window) / window

    def __repr__(self) -> str:
        return f"<RateWindow span={self.span}s>"


# Durations kept for percentiles in `status` (the newest ones, up to 5 minutes old).
RECENT = 4096


class Perf:
    def __init__(self, prices: Mapping[str, Mapping[str, Any]] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.prices = PriceTable(prices or {})
        # Requests by (method, provider, model, outcome, front): their durations
        # (the counts are the histograms' counts; outcomes merge when rendered).
        self.requests: dict[tuple[str, str, str, str, str], Histogram] = {}
        self.upstream_seconds: dict[tuple[str, str], Histogram] = {}
        self.first_token_seconds: dict[tuple[str, str], Histogram] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        # Answers made by a fallback, by (from, to, reason) (routing.fallbacks).
        self.fallbacks: dict[tuple[str, str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.cost_usd: dict[tuple[str, str], float] = {}
        self._errors: collections.deque[float] = collections.deque(maxlen=RECENT)
        # Upstream calls (not attempts) and those that failed in the end, per provider.
        self.calls: dict[str, RateWindow] = {}
        self.failed_calls: dict[str, RateWindow] = {}
        self.last_errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=5)
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=RECENT)
        # "provider/model" -> (provider, model), split once per model name.
        self._split: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"<Perf requests={sum(h.count for h in self.requests.values())} enabled={self.enabled}>"

    def request_seconds(self) -> dict[tuple[str, str, str, str], Histogram]:
        """Durations by (method, provider, model, front), all outcomes together."""
        merged: dict[tuple[str, str, str, str], Histogram] = {}
        for (method, provider, model, _, front), hist in list(self.requests.items()):
            into = merged.get((method, provider, model, front))
            if into is None:
                into = merged[(method, provider, model, front)] = Histogram()
            into.merge(hist)
        return merged

    def set_prices(self, prices: Mapping[str, Mapping[str, Any]]) -> None:
        self.prices = PriceTable(prices)

    def labels(self, qualified_model: str) -> tuple[str, str]:
        """("anthropic", "claude-x") for "anthropic/claude-x" (memoised)."""
        try:
            return self._split[qualified_model]
        except KeyError:
            provider, _, model = qualified_model.partition("/")
            pair = self._split[qualified_model] = (provider, model) if model else ("", provider)
            return pair

    # ------------------------------------------------------------ recording

    def request(self, method: str, provider: str, model: str, outcome: str, seconds: float,
                front: str = "socket") -> None:
        """One request answered (or failed) after `seconds`, asked through
        `front` (socket, openai, anthropic, responses). The hot path: one
        dictionary lookup, one histogram update, one append."""
        if not self.enabled:
            return
        _observe(self.requests, (method, provider, model, outcome, front), seconds)
        now = _monotonic()
        self._recent.append((now, seconds))
        if outcome not in _SUCCESS:
            self._errors.append(now)
            self.last_errors.append({"method": method, "provider": provider, "model": model, "code": outcome,
                                     "at": time.time()})

    def first_token(self, provider: str, model: str, seconds: float) -> None:
        if self.enabled:
            _observe(self.first_token_seconds, (provider, model), seconds)

    def attempt(self, provider: str, status: str) -> None:
        """One HTTP attempt to a provider: its status code, or "error"."""
        key = (provider, status)
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def retry(self, provider: str) -> None:
        self.retries[provider] = self.retries.get(provider, 0) + 1

    def fallback(self, source: str, target: str, reason: str) -> None:
        key = (source, target, reason)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def upstream_call(self, provider: str, model: str, seconds: float, ok: bool,
                      input_tokens: int = 0, output_tokens: int = 0) -> None:
        """A whole upstream call (all its attempts): how long, whether it
        succeeded in the end, and what it billed. Kept even when recording
        is off: the health check reads the failure window."""
        now = time.monotonic()
        window = self.calls.get(provider)
        if window is None:
            window = self.calls[provider] = RateWindow()
            self.failed_calls[provider] = RateWindow()
        window.add(now)
        if not ok:
            self.failed_calls[provider].add(now)
        if not self.enabled:
            return
        key = (provider, model)
        _observe(self.upstream_seconds, key, seconds)
        if ok:
            for direction, n in (("input", input_tokens), ("output", output_tokens)):
                tkey = (provider, model, direction)
                self.tokens[tkey] = self.tokens.get(tkey, 0) + n
            self.cost_usd[key] = self.cost_usd.get(key, 0.0) + self.prices.cost(
                f"{provider}/{model}", input_tokens, output_tokens)

    # -------------------------------------------------------------- reading

    def call_failures(self, provider: str, window: int) -> tuple[int, int]:
        """(calls, failed calls) to `provider` in the last `window` seconds."""
        now = time.monotonic()
        calls = self.calls.get(provider)
        if calls is None:
            return 0, 0
        return calls.total(now, window), self.failed_calls[provider].total(now, window)

    def summary(self) -> dict[str, Any]:
        """For people (`status.performance`): rates, percentiles, totals."""
        now = time.monotonic()
        recent = sorted(d for t, d in self._recent if now - t <= 300)

        def rate(times: list[float], window: float) -> float:
            """Events per second over `window`, or over the span the newest
            RECENT events cover when that is shorter (a busy daemon)."""
            inside = [t for t in times if now - t <= window]
            if len(inside) == RECENT and inside:
                window = max(now - inside[0], 1e-3)
            return round(len(inside) / window, 3)

        request_times = [t for t, _ in self._recent]
        error_times = list(self._errors)

        def pct(q: float) -> float | None:
            if not recent:
                return None
            return round(recent[min(len(recent) - 1, int(q * len(recent)))] * 1000, 3)

        by_model: dict[str, dict[str, Any]] = {}
        for (provider, model, direction), n in self.tokens.items():
            row = by_model.setdefault(f"{provider}/{model}", {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
            row[f"{direction}_tokens"] += n
        for (provider, model), usd in self.cost_usd.items():
            by_model.setdefault(f"{provider}/{model}", {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
            by_model[f"{provider}/{model}"]["cost_usd"] = round(usd, 6)
        upstream = {}
        for (provider, model), hist in self.upstream_seconds.items():
            upstream[f"{provider}/{model}"] = {"calls": hist.count,
                                               "mean_ms": round(hist.sum / hist.count * 1000, 3) if hist.count else 0}
        return {
            "enabled": self.enabled,
            "requests_per_s": {"1m": rate(request_times, 60), "5m": rate(request_times, 300)},
            "errors_per_s": {"1m": rate(error_times, 60), "5m": rate(error_times, 300)},
            "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "window_s": 300,
                           "samples": len(recent)},
            "upstream": upstream,
            "by_model": by_model,
            "last_errors": list(self.last_errors),
        }


def _observe(table: dict[Any, Histogram], key: Any, seconds: float) -> None:
    hist = table.get(key)
    if hist is None:
        hist = table[key] = Histogram()
    hist.observe(seconds)


# Outcomes that are not errors.
_SUCCESS = frozenset({"ok", "cached-exact", "cached-semantic", "coalesced"})
