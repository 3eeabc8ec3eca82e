"""What recording metrics costs: the memory-hit benchmark with metrics on and
off, two daemons side by side in the same run (target: overhead <= 5 %).

Two measures, because latency over a socket is noisy on these machines:

1. p50 of a memory-tier hit through the sync client, alternating blocks of
   requests between the two daemons so both see the same machine state;
   the ratio on/off of the medians of the block p50s;
2. the daemons' own CPU time per hit (psutil), over the same requests: the
   overhead where it is actually paid;
3. `Perf.request` alone, in process (what one recording costs).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import timeit

from _common import cpu_seconds, daemon, daemon_process, print_table, time_calls

from claif_client import Client

BLOCKS = int(os.environ.get("BENCH_BLOCKS", "12"))
PER_BLOCK = int(os.environ.get("BENCH_PER_BLOCK", "2000"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]




def main() -> int:
    rows = []
    with daemon({"CLAIF_METRICS__ENABLED": "true"}) as on_sock, daemon({"CLAIF_METRICS__ENABLED": "false"}) as off_sock:
        clients = {"on": Client(on_sock), "off": Client(off_sock)}
        procs = {"on": daemon_process(on_sock), "off": daemon_process(off_sock)}
        for c in clients.values():
            c.complete(MESSAGES, model="echo/bench")  # stored: every request below is a memory hit
        p50s: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, float] = {"on": 0.0, "off": 0.0}
        for block in range(BLOCKS):
            order = ("on", "off") if block % 2 == 0 else ("off", "on")
            for name in order:
                client, proc = clients[name], procs[name]
                before = cpu_seconds(proc)
                samples = time_calls(lambda c=client: c.complete(MESSAGES, model="echo/bench"), PER_BLOCK, warmup=100)
                cpu[name] += cpu_seconds(proc) - before
                p50s[name].append(statistics.median(samples))
        total = BLOCKS * PER_BLOCK
        on_p50, off_p50 = statistics.median(p50s["on"]), statistics.median(p50s["off"])
        rows.append({"name": "memory hit, metrics off (baseline)", "p50_us": off_p50 * 1e6,
                     "daemon_cpu_us_per_hit": cpu["off"] / total * 1e6})
        rows.append({"name": "memory hit, metrics on", "p50_us": on_p50 * 1e6,
                     "daemon_cpu_us_per_hit": cpu["on"] / total * 1e6,
                     "p50_ratio": on_p50 / off_p50, "cpu_ratio": cpu["on"] / cpu["off"] if cpu["off"] else 0.0})
        with clients["on"] as c:
            recorded = c.status()["performance"]["requests_per_s"]
        assert recorded["5m"] > 0, "metrics were not recorded"
        for c in clients.values():
            c.close()
    print_table(f"Metrics overhead on a memory hit ({BLOCKS} alternating blocks of {PER_BLOCK}; target <= 1.05)",
                rows)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from claifd.config import LogConfig
    from claifd.perf import Perf
    from claifd.request_log import CompletionLog

    perf = Perf()
    completion_log = CompletionLog(LogConfig())
    n = 200_000
    per_call = timeit.timeit(lambda: perf.request("complete", "openai", "gpt-4o-mini", "cached-exact", 0.00005),
                             number=n) / n
    clock = time.perf_counter

    def a_hit() -> None:  # what Completions._hit does for one memory hit
        started = clock()
        provider, model = perf.labels("openai/gpt-4o-mini")
        seconds = clock() - started
        perf.request("complete", provider, model, "cached-exact", seconds)
        completion_log.add((time.time(), "socket", "complete", "default", provider, model, "cached-exact", seconds,
                            12, 40, 0.0, None, None))
        if len(completion_log.pending) > 10_000:
            completion_log.pending.clear()  # (the writer thread's part is not timed here)

    whole = timeit.timeit(a_hit, number=n) / n
    empty = timeit.timeit(lambda: None, number=n) / n
    daemon_cpu = rows[0]["daemon_cpu_us_per_hit"]
    assert isinstance(daemon_cpu, float)
    print_table("Recording, in process", [
        {"name": "Perf.request (a hit's labels)", "ns_per_call": (per_call - empty) * 1e9},
        {"name": "everything a memory hit records (timing, labels, request, log)",
         "ns_per_call": (whole - empty) * 1e9,
         "share_of_daemon_cpu_per_hit": (whole - empty) * 1e6 / daemon_cpu},
    ])
    print(f"\n(run at {time.strftime('%H:%M:%S')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
