"""Sessions at scale: 200,000 sessions of 10 messages under a 64 MB budget.

Measures, over the socket against one daemon:
- accounted memory never above the budget (sampled all along the load);
- the daemon's RSS growth against the budget (psutil);
- `session get` p50 for a session in memory and for an evicted one, with
  `ping` in the same run as the baseline;
- zero messages lost: every session's message count read back from the store.

BENCH_SESSIONS=20000 runs a smaller load.
"""

from __future__ import annotations

import os
import random
import statistics
import time

import anyio
import msgspec
import psutil
from _common import daemon, print_table, time_calls

from claif_client import AsyncClient, Client

N = int(os.environ.get("BENCH_SESSIONS", "200000"))
MESSAGES = 10
BUDGET = 64 * 1024 * 1024
CONCURRENCY = 64


def document(i: int) -> dict[str, object]:
    return {
        "id": "",
        "title": f"bench session {i}",
        "metadata": {"n": i},
        "messages": [
            {"role": "user" if j % 2 == 0 else "assistant", "content": f"session {i} message {j}: " + "lorem ipsum " * 4,
             "time": 1.0, "tokens": 20}
            for j in range(MESSAGES)
        ],
    }


async def load(sock: str, proc: psutil.Process) -> tuple[list[str], int, float, int]:
    ids: list[str] = []
    peak_accounted = 0
    peak_rss = proc.memory_info().rss
    next_index = 0

    async with AsyncClient(sock) as c:

        async def worker() -> None:
            nonlocal next_index
            while next_index < N:
                i = next_index
                next_index += 1
                ids.append((await c.session_import(document(i)))["id"])

        async def sampler() -> None:
            nonlocal peak_accounted, peak_rss
            while True:
                status = (await c.status())["sessions"]
                assert status["memory_bytes"] <= status["memory_budget_bytes"], status
                peak_accounted = max(peak_accounted, status["memory_bytes"])
                peak_rss = max(peak_rss, proc.memory_info().rss)
                await anyio.sleep(0.2)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler)
            async with anyio.create_task_group() as workers:
                for _ in range(CONCURRENCY):
                    workers.start_soon(worker)
            tg.cancel_scope.cancel()
        elapsed = time.perf_counter() - t0
    return ids, peak_accounted, elapsed, peak_rss


def main() -> None:
    with daemon({"CLAIF_SESSION__MEMORY_BUDGET": str(BUDGET)}) as sock:
        pid = next(p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and sock in p.info["cmdline"])
        proc = psutil.Process(pid)
        rss_before = proc.memory_info().rss
        ids, peak_accounted, elapsed, peak_rss = anyio.run(load, sock, proc)
        with Client(sock) as c:
            status = c.status()["sessions"]
            # The most recently imported sessions are in memory; the oldest were
            # evicted first (each is read once, so each read is a load).
            hot = ids[-200:]
            cold = ids[:200]
            ping = time_calls(c.ping, 5000)
            hot_get = time_calls(lambda: c.session_get(random.choice(hot)), 5000)
            before_loads = c.status()["sessions"]["loads"]
            cold_get = []
            for sid in cold:
                t0 = time.perf_counter()
                doc = c.session_get(sid)
                cold_get.append(time.perf_counter() - t0)
                assert len(doc["messages"]) == MESSAGES
            loads = c.status()["sessions"]["loads"] - before_loads
            total_messages = 0
            counted = 0
            offset = 0
            while True:
                page = c.session_list(offset=offset, limit=10_000)
                if not page["sessions"]:
                    break
                total_messages += sum(r["message_count"] for r in page["sessions"])
                counted += len(page["sessions"])
                offset += len(page["sessions"])
            rss_after = proc.memory_info().rss
    p = statistics.median(ping)
    rows = [
        {"name": "ping (baseline)", "p50_us": p * 1e6},
        {"name": "session get, in memory", "p50_us": statistics.median(hot_get) * 1e6,
         "ratio": statistics.median(hot_get) / p},
        {"name": f"session get, evicted ({loads} loads from disk)", "p50_us": statistics.median(cold_get) * 1e6,
         "ratio": statistics.median(cold_get) / p},
    ]
    print_table("session get over the socket (targets: in memory p50 <= 100 us, evicted p50 <= 2 ms)", rows)
    load_rows = [{
        "sessions": N, "messages": N * MESSAGES, "load_s": elapsed, "sessions_per_s": N / elapsed,
        "budget_mb": BUDGET / 2**20, "peak_accounted_mb": peak_accounted / 2**20,
        "in_memory_after": status["in_memory"], "evictions": status["evictions"],
        "rss_growth_mb": (max(peak_rss, rss_after) - rss_before) / 2**20,
        "rss_growth_vs_budget": (max(peak_rss, rss_after) - rss_before) / BUDGET,
        "sessions_counted_back": counted, "messages_counted_back": total_messages,
        "messages_lost": N * MESSAGES - total_messages,
    }]
    print_table("load (targets: accounted <= budget throughout; RSS growth <= 2x budget; 0 lost)", load_rows)
    print(msgspec.json.encode({"bench": "sessions", "rows": rows + load_rows}).decode())


if __name__ == "__main__":
    main()
