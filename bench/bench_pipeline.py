"""The completion pipeline, before and after a change, in one run: every
path a request takes through the daemon, on both fronts, timed against the
same daemon of an earlier commit (`BENCH_BEFORE=REV`, default HEAD~1: its
code from `git archive`, in this venv), in paired rounds whose order
alternates; a row's ratio is the median of its rounds' ratios.

The provider is `echo` (no upstream), so the rows time the daemon alone:

    socket hit        the thin client, a memory-tier hit (the inline fast path)
    socket miss       a new prompt each call: prepare, the disk tier, a flight,
                      the provider, the store (plain, then streamed)
    front hit         the HTTP front (OpenAI wire, httpx keep-alive), a hit
    front miss        the same, a new prompt each call (plain, then streamed)

Target for a reshape: every row within 5% of before (ratio <= 1.05), or better.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from itertools import count
from pathlib import Path

import httpx
from _common import code_of, daemon, print_table, time_calls

from claif_client import Client

BEFORE = os.environ.get("BENCH_BEFORE", "HEAD~1")
N = int(os.environ.get("BENCH_N", "4000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
MODEL = "echo/bench"
ROWS = ("socket hit", "socket miss", "socket miss, streamed", "front hit", "front miss", "front miss, streamed")


class Target:
    """One daemon with its HTTP front on loopback: the calls each row times."""

    def __init__(self, sock: str) -> None:
        self.client = Client(sock)
        http = self.client.status()["http"]
        token = (Path(sock).parent / ".claif" / "http-token").read_text().strip()
        self.http = httpx.Client(base_url=f"http://{http['listen']}",
                                 headers={"authorization": f"Bearer {token}"})
        self.fresh = count()
        self.client.complete("the same question", model=MODEL)
        self.chat("the same question")

    def chat(self, prompt: str, stream: bool = False) -> None:
        doc = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream}
        r = self.http.post("/v1/chat/completions", json=doc)
        assert r.status_code == 200, r.text

    def calls(self) -> dict[str, Callable[[], object]]:
        c = self.client
        return {
            "socket hit": lambda: c.complete("the same question", model=MODEL),
            "socket miss": lambda: c.complete(f"new {next(self.fresh)}", model=MODEL),
            "socket miss, streamed": lambda: list(c.stream(f"new {next(self.fresh)}", model=MODEL)),
            "front hit": lambda: self.chat("the same question"),
            "front miss": lambda: self.chat(f"new {next(self.fresh)}"),
            "front miss, streamed": lambda: self.chat(f"new {next(self.fresh)}", stream=True),
        }

    def close(self) -> None:
        self.client.close()
        self.http.close()


@contextmanager
def target(env: dict[str, str]) -> Iterator[Target]:
    front = {"CLAIF_SERVER__HTTP__ENABLED": "true", "CLAIF_SERVER__HTTP__LISTEN": "127.0.0.1:0"}
    with daemon({**front, **env}) as sock:
        t = Target(sock)
        try:
            yield t
        finally:
            t.close()


def main() -> None:
    rev = subprocess.run(["git", "rev-parse", "--short", BEFORE], capture_output=True, text=True,
                         check=True).stdout.strip()
    before, now = f"before {rev}", "now"
    p50s: dict[tuple[str, str], list[float]] = {}
    with ExitStack() as stack:
        targets = {before: stack.enter_context(target(code_of(BEFORE))), now: stack.enter_context(target({}))}
        for r in range(ROUNDS):
            # Paired rounds, the order alternating: a drift of the machine
            # hits both sides of a round alike.
            for name in (before, now) if r % 2 == 0 else (now, before):
                for row, call in targets[name].calls().items():
                    p50s.setdefault((row, name), []).append(statistics.median(time_calls(call, N // ROUNDS,
                                                                                         warmup=50)))
    rows = []
    for row in ROWS:
        ratios = [n / b for b, n in zip(p50s[(row, before)], p50s[(row, now)])]
        rows.append({"path": row, f"{before} p50 us": statistics.median(p50s[(row, before)]) * 1e6,
                     "now p50 us": statistics.median(p50s[(row, now)]) * 1e6,
                     "ratio (median of rounds)": statistics.median(ratios),
                     "rounds": f"{min(ratios):.2f}-{max(ratios):.2f}"})
    print_table(f"the pipeline, before ({rev}) and now, {ROUNDS} paired rounds, {N} calls a row "
                "(target: ratio <= 1.05)", rows)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
