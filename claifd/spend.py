"""What the calls cost, kept, and the budgets that hold it.

Every paid upstream call is priced (cache/prices.py: input, output, prompt
cache writes and reads) and added to the day's row of its provider, model
and namespace. That row is in the ledger (SQLite, `budgets.ledger`) before
anyone has the answer: `paid` commits it (see `commit`), so a call whose
answer was delivered is counted once, across a restart or a kill -9. A cache hit costs 0; what
it saved is added to the same row (written within a second, nothing waits
for it), as is what the provider's prompt cache saved.

Budgets (`budgets.*`) are checked against the totals in memory, no I/O: a
global limit, and limits per provider, per "provider/model" pattern and per
namespace, each daily and monthly (local calendar). `over` names the first
limit reached; at `budgets.warn_at` of one, health warns.

A model without a price is counted as unpriced (its calls and tokens), never
as free: status and health name it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from claif_client.protocol import Usage

from .cache.prices import FREE_PROVIDERS, PRICES_AS_OF, PriceTable
from .config import BudgetsConfig

__all__ = ["Spend", "Limit", "FIELDS"]

log = structlog.get_logger("claifd.spend")

# A row's figures, in the ledger's column order.
FIELDS = ("calls", "input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "usd",
          "unpriced_calls", "cache_hits", "saved_cache_usd", "saved_prompt_cache_usd")
_CALLS, _IN, _OUT, _WRITE, _READ, _USD, _UNPRICED, _HITS, _SAVED_CACHE, _SAVED_PROMPT = range(len(FIELDS))
# Seconds between writes of what needs no wait (the savings of cache hits), and between checkpoints.
FLUSH_EVERY = 1.0
CHECKPOINT_EVERY = 5.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS spend (
    day TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, namespace TEXT NOT NULL,
    {", ".join(f"{f} REAL NOT NULL DEFAULT 0" for f in FIELDS)},
    PRIMARY KEY (day, provider, model, namespace)
)
"""
# Rows are added to, never overwritten: two daemons sharing a ledger both count.
_UPSERT = (f"INSERT INTO spend (day, provider, model, namespace, {', '.join(FIELDS)}) "
           f"VALUES ({', '.join('?' * (4 + len(FIELDS)))}) ON CONFLICT (day, provider, model, namespace) DO UPDATE "
           f"SET {', '.join(f'{f} = {f} + excluded.{f}' for f in FIELDS)}")

Key = tuple[str, str, str, str]  # (day, provider, model, namespace)


@dataclass(frozen=True)
class Limit:
    """One configured limit: its config key, period and what it covers."""

    key: str  # budgets.providers.anthropic.daily_usd
    period: str  # "day" or "month"
    kind: str  # "all", "provider", "model" (a pattern) or "namespace"
    name: str
    usd: float

    def covers(self, provider: str, model: str, namespace: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "provider":
            return provider == self.name
        if self.kind == "namespace":
            return namespace == self.name
        return fnmatch.fnmatchcase(f"{provider}/{model}", self.name)


def _limits(config: BudgetsConfig) -> list[Limit]:
    out = []
    for period, field in (("day", "daily_usd"), ("month", "monthly_usd")):
        value = getattr(config, field)
        if value is not None:
            out.append(Limit(f"budgets.{field}", period, "all", "", float(value)))
        for kind, section in (("provider", config.providers), ("model", config.models),
                              ("namespace", config.namespaces)):
            for name, limit in section.items():
                value = getattr(limit, field)
                if value is not None:
                    out.append(Limit(f"budgets.{kind}s.{name}.{field}", period, kind, name, float(value)))
    return out


class Spend:
    def __init__(self, config: BudgetsConfig, prices: PriceTable, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.prices = prices
        self.clock = clock
        self.limits = _limits(config)
        # This month's rows (the ledger's, loaded at start, and since).
        self.rows: dict[Key, list[float]] = {}
        # What was added to each row since it was last written (the ledger adds it).
        self._pending: dict[Key, list[float]] = {}
        # Cache hits since the last tally, by (provider, model, namespace): [hits, input, output tokens].
        self._hits: dict[tuple[str, str, str], list[int]] = {}
        self._db: sqlite3.Connection | None = None
        self.error: str | None = None
        self._day = ("", "", 0.0)  # (day, month, the day's end)
        self.path = Path(os.path.expanduser(config.ledger))
        # What each limit has spent, recomputed after a paid call or at midnight.
        self._spent: dict[Limit, float] | None = None
        self._spent_day = ""
        # Since the daemon started, for the metrics: USD by (provider, model); saved by the cache and the prompt cache.
        self.usd_total: dict[tuple[str, str], float] = {}
        self.saved_total = {"cache": 0.0, "prompt_cache": 0.0}

    def __repr__(self) -> str:
        return f"<Spend rows={len(self.rows)} limits={len(self.limits)} error={self.error!r}>"

    def reconfigure(self, config: BudgetsConfig) -> None:
        self.config = config
        self.limits = _limits(config)
        self._spent = None

    def set_prices(self, prices: PriceTable) -> None:
        self.prices = prices

    # -------------------------------------------------------------- calendar

    def today(self) -> tuple[str, str]:
        """(day, month) in local time: "2026-12-07", "2026-12"."""
        now = self.clock()
        day, month, ends = self._day
        if now >= ends or not day:
            t = time.localtime(now)
            day, month = time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t)
            midnight = time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, 0, 0, 0, 0, 0, -1))
            self._day = (day, month, midnight)
        return day, month

    # ---------------------------------------------------------------- ledger

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        try:
            await anyio.to_thread.run_sync(self._open)
        except (sqlite3.Error, OSError) as exc:
            self.error = f"cannot open the spend ledger {self.path}: {exc}"
            log.error("spend ledger unavailable: spend is counted in memory only", path=str(self.path),
                      error=str(exc))
        task_group.start_soon(self._writer)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self.path, check_same_thread=False)
        # WAL, synchronous NORMAL: a commit is a write into the OS's page
        # cache (no fsync), so it survives the daemon's crash (kill -9); only a
        # power cut could lose the last ones. Checkpoints (which do sync) run
        # in a worker thread, never in a commit; busy_timeout 0: a commit
        # never waits on a lock (it is retried with the next one).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA busy_timeout=0")
        db.execute(_SCHEMA)
        _, month = self.today()
        for row in db.execute(f"SELECT day, provider, model, namespace, {', '.join(FIELDS)} FROM spend "
                              "WHERE day >= ?", (month,)):
            self.rows[(row[0], row[1], row[2], row[3])] = [float(x) for x in row[4:]]
        os.chmod(self.path, 0o600)
        self._db = db

    async def _writer(self) -> None:
        """What waits for no one (the savings of cache hits) is written every
        second; the WAL is checkpointed in a worker thread."""
        last_checkpoint = time.monotonic()
        while True:
            await anyio.sleep(FLUSH_EVERY)
            self.commit()
            if time.monotonic() - last_checkpoint >= CHECKPOINT_EVERY and self._db is not None:
                last_checkpoint = time.monotonic()
                try:
                    await anyio.to_thread.run_sync(self._checkpoint)
                except (sqlite3.Error, OSError) as exc:
                    log.warning("spend ledger checkpoint failed", path=str(self.path), error=str(exc))

    def _checkpoint(self) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def commit(self) -> None:
        """Write every row changed since the last commit, in one transaction,
        here and now: about 15 us of page-cache writes (measured), less than
        a worker thread's round trip (`bench/bench_transport.py` lost 0.3 ms a
        miss to it). A failure keeps the figures for the next commit and is said."""
        if self._hits:
            self.take_hits()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            if self._db is None:
                raise sqlite3.OperationalError("the ledger is not open")
            with self._db:  # one transaction: committed, or rolled back on an error
                self._db.executemany(_UPSERT, [(*key, *row) for key, row in pending.items()])
            if self.error is not None:
                log.info("spend ledger writable again", path=str(self.path))
                self.error = None
        except (sqlite3.Error, OSError) as exc:
            for key, row in pending.items():  # written with the next commit
                into = self._pending.setdefault(key, [0.0] * len(FIELDS))
                for i, x in enumerate(row):
                    into[i] += x
            if self.error is None:
                log.error("cannot write the spend ledger; counting in memory until it can", path=str(self.path),
                          error=str(exc))
            self.error = f"cannot write the spend ledger {self.path}: {exc}"

    def close(self) -> None:
        """Write what is left and checkpoint (at exit)."""
        self.commit()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    # -------------------------------------------------------------- counting

    def _add(self, provider: str, model: str, namespace: str, *figures: tuple[int, float]) -> None:
        """Add (field, amount) pairs to today's row, in memory and to what the ledger gets next."""
        day, _ = self.today()
        key = (day, provider, model, namespace)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0.0] * len(FIELDS)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = [0.0] * len(FIELDS)
        for i, x in figures:
            row[i] += x
            pending[i] += x

    def paid(self, provider: str, model: str, namespace: str, usage: Usage) -> float:
        """Count one paid call, in the ledger when this returns (or the
        ledger failed, said in `error`): call it before anyone has the answer."""
        name = f"{provider}/{model}"
        write, read = usage.cache_creation_input_tokens, usage.cache_read_input_tokens
        figures: list[tuple[int, float]] = [
            (_CALLS, 1), (_IN, usage.input_tokens), (_OUT, usage.output_tokens), (_WRITE, write), (_READ, read)]
        price = self.prices.price(name)
        usd = 0.0
        if price is None:
            figures.append((_UNPRICED, 1))
        else:
            usd = self.prices.cost(name, usage.input_tokens, usage.output_tokens, write, read)
            saved = self.prices.prompt_cache_saved(name, write, read)
            figures += [(_USD, usd), (_SAVED_PROMPT, saved)]
            self.usd_total[(provider, model)] = self.usd_total.get((provider, model), 0.0) + usd
            self.saved_total["prompt_cache"] += saved
            self._spent = None
        self._add(provider, model, namespace, *figures)
        if price is None or provider not in FREE_PROVIDERS:
            self.commit()
        return usd

    def hit(self, provider: str, model: str, namespace: str, input_tokens: int, output_tokens: int) -> None:
        """A cache hit: it costs nothing. Only tallied here (the hot path:
        about a microsecond); what it saved is priced when the tally is
        taken (`take_hits`: every second, and before any report)."""
        tally = self._hits.get((provider, model, namespace))
        if tally is None:
            self._hits[(provider, model, namespace)] = [1, input_tokens, output_tokens]
        else:
            tally[0] += 1
            tally[1] += input_tokens
            tally[2] += output_tokens

    def take_hits(self) -> None:
        """Move the tallied hits into today's rows, priced."""
        hits, self._hits = self._hits, {}
        for (provider, model, namespace), (n, tokens_in, tokens_out) in hits.items():
            saved = self.prices.cost(f"{provider}/{model}", tokens_in, tokens_out)
            self._add(provider, model, namespace, (_HITS, n), (_SAVED_CACHE, saved))
            self.saved_total["cache"] += saved

    # --------------------------------------------------------------- budgets

    def spent(self, limit: Limit) -> float:
        day, month = self.today()
        prefix = day if limit.period == "day" else month
        return sum(row[_USD] for (d, provider, model, namespace), row in self.rows.items()
                   if d.startswith(prefix) and limit.covers(provider, model, namespace))

    def over(self, provider: str, model: str, namespace: str) -> tuple[Limit, float] | None:
        """The first limit this call would go over (spent at or above it),
        with what was spent (no I/O; per request only while limits are set)."""
        if not self.limits:
            return None
        spent = self._spent
        day, _ = self.today()
        if spent is None or day != self._spent_day:
            spent = self._spent = {limit: self.spent(limit) for limit in self.limits}
            self._spent_day = day
        for limit in self.limits:
            if spent[limit] >= limit.usd and limit.covers(provider, model, namespace):
                return limit, spent[limit]
        return None

    def budgets(self) -> list[dict[str, Any]]:
        """Each limit, what was spent against it and how much of it."""
        out = []
        for limit in self.limits:
            spent = self.spent(limit)
            used = spent / limit.usd if limit.usd > 0 else (1.0 if spent > 0 else 0.0)
            state = "exceeded" if spent >= limit.usd else "warning" if used >= self.config.warn_at else "ok"
            out.append({"key": limit.key, "period": limit.period, "limit_usd": limit.usd, "spent_usd": round(spent, 9),
                        "used": round(used, 4), "state": state})
        return out

    # ---------------------------------------------------------------- report

    def report(self) -> dict[str, Any]:
        """Today and this month: totals, by provider, model and namespace, what was saved; budgets; unpriced models."""
        self.take_hits()
        day, month = self.today()
        out: dict[str, Any] = {}
        for period, prefix in (("today", day), ("month", month)):
            total = [0.0] * len(FIELDS)
            by: dict[str, dict[str, list[float]]] = {"provider": {}, "model": {}, "namespace": {}}
            for (d, provider, model, namespace), row in self.rows.items():
                if not d.startswith(prefix):
                    continue
                for i, x in enumerate(row):
                    total[i] += x
                for kind, name in (("provider", provider), ("model", f"{provider}/{model}"),
                                   ("namespace", namespace)):
                    acc = by[kind].setdefault(name, [0.0] * len(FIELDS))
                    for i, x in enumerate(row):
                        acc[i] += x
            doc = _figures(total)
            doc["by_provider"] = {k: _figures(v) for k, v in sorted(by["provider"].items())}
            doc["by_model"] = {k: _figures(v) for k, v in sorted(by["model"].items())}
            doc["by_namespace"] = {k: _figures(v) for k, v in sorted(by["namespace"].items())}
            out[period] = doc
        out["day"], out["month_name"] = day, month
        out["budgets"] = self.budgets()
        out["action"] = self.config.action
        out["unpriced"] = self.unpriced()
        out["prices_as_of"] = PRICES_AS_OF
        out["ledger"] = {"path": str(self.path), "error": self.error}
        return out

    def unpriced(self) -> list[str]:
        """Models called this month that have no price."""
        return sorted({f"{p}/{m}" for (_, p, m, _), row in self.rows.items() if row[_UNPRICED]})



def _figures(row: list[float]) -> dict[str, Any]:
    return {
        "usd": round(row[_USD], 9), "calls": int(row[_CALLS]), "unpriced_calls": int(row[_UNPRICED]),
        "input_tokens": int(row[_IN]), "output_tokens": int(row[_OUT]),
        "cache_write_tokens": int(row[_WRITE]), "cache_read_tokens": int(row[_READ]),
        "cache_hits": int(row[_HITS]),
        "saved": {"cache_usd": round(row[_SAVED_CACHE], 9), "prompt_cache_usd": round(row[_SAVED_PROMPT], 9)},
    }
