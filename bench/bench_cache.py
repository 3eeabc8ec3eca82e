"""Cache benchmarks, each against a baseline measured in the same run.

1. Memory-tier hit through the sync thin client vs the raw echo floor (the
   foundation bench's minimal uvloop echo server, same framing). Target:
   p50 <= 2.0x the floor.
2. Disk-tier hit with the memory tier cold (a budget too small to hold the
   entry, so every hit is read from SQLite in the worker thread). Target:
   p50 <= 0.5 ms.
3. Hit throughput with 4 client processes, against 4 processes on the floor.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec
from _common import (
    daemon,
    floor_round_trip,
    floor_server,
    print_table,
    short_tmpdir,
    summarize,
    time_calls,
    wait_for_socket,
)

from claif_client import Client

N = int(os.environ.get("BENCH_N", "20000"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
THROUGHPUT_SECONDS = 3.0


def _hammer(kind: str, path: str, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    if kind == "floor":
        call = floor_round_trip(path)
    else:
        client = Client(path)
        client.complete(MESSAGES, model="echo/bench")

        def call() -> None:
            client.complete(MESSAGES, model="echo/bench")

    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            call()
        n += 100
    out.put(n)


def throughput(kind: str, path: str, procs: int = 4) -> float:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [ctx.Process(target=_hammer, args=(kind, path, THROUGHPUT_SECONDS, q)) for _ in range(procs)]
    for w in workers:
        w.start()
    total = sum(q.get() for _ in workers)
    for w in workers:
        w.join()
    return total / THROUGHPUT_SECONDS


@contextmanager
def redis_get() -> Iterator[Callable[[], object] | None]:
    """redis-py GET of a value the size of a cached reply, against a local
    redis-server on a Unix socket: the yardstick the issue names. None when
    redis-server or redis-py is not installed."""
    server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        redis = None
    if server is None or redis is None:
        yield None
        return
    tmp = short_tmpdir()
    path = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        wait_for_socket(path)
        r = redis.Redis(unix_socket_path=path)
        r.set("k", b"x" * 300)
        yield lambda: r.get("k")
        r.close()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    with floor_server() as floor_path:
        floor_call = floor_round_trip(floor_path)
        floor: list[float] = []
        hits: list[float] = []
        disk_hits: list[float] = []
        redis_times: list[float] = []
        with daemon() as sock, daemon({"CLAIF_CACHE__MEMORY_MAX_BYTES": "1"}) as cold_sock, redis_get() as get:
            hot = Client(sock)
            cold = Client(cold_sock)
            hot.complete(MESSAGES, model="echo/bench")  # the miss that stores it
            cold.complete(MESSAGES, model="echo/bench")
            time.sleep(0.3)  # let the write-behind commit it to disk
            assert hot.complete(MESSAGES, model="echo/bench").cached == "exact"
            assert cold.complete(MESSAGES, model="echo/bench").cached == "exact"
            for _ in range(4):  # interleaved rounds
                floor += time_calls(floor_call, N // 4)
                hits += time_calls(lambda: hot.complete(MESSAGES, model="echo/bench"), N // 4)
                disk_hits += time_calls(lambda: cold.complete(MESSAGES, model="echo/bench"), N // 20, warmup=100)
                if get is not None:
                    redis_times += time_calls(get, N // 4)
            stats = cold.cache_stats()
            assert stats["hits_disk"] >= N // 5, stats
            floor_rps = throughput("floor", floor_path)
            hit_rps = throughput("hit", sock)
            hot.close()
            cold.close()
        base = statistics.median(floor)
        rows = [
            summarize("floor (raw echo, same framing, uvloop)", floor),
            summarize("memory-tier hit via claifd + Client", hits, base),
            summarize("disk-tier hit (memory cold) via claifd + Client", disk_hits, base),
        ]
        if redis_times:
            rows.append(summarize("reference: redis-py GET, local redis-server, Unix socket", redis_times, base))
        print_table("cache hits (targets: memory hit ratio <= 2.0; disk hit p50 <= 500 us)", rows)
        tp = [
            {"name": "floor, 4 client processes", "req_per_s": floor_rps},
            {"name": "memory-tier hits, 4 client processes", "req_per_s": hit_rps, "ratio": hit_rps / floor_rps},
        ]
        print_table("hit throughput (2 cores shared by clients and server)", tp)
        print(msgspec.json.encode({"bench": "cache", "rows": rows + tp}).decode())


if __name__ == "__main__":
    main()
