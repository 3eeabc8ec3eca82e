"""The Redis backend (claifd/cache/redis_store.py), in one run:

1. a hit through the Redis backend with the near cache warm (a memory hit);
2. the same with the near cache cold (`cache.memory_max_bytes` 1 byte: every
   hit is a Redis GET, decoded and promoted);
3. a hit through the local backend with its memory tier cold (a SQLite read
   in the worker thread), for comparison;
4. a bare redis-py GET of a value of the same size on the same redis-server:
   the floor for row 2.

All over the sync thin client (rows 1-3) against daemons on one
redis-server on a Unix socket, interleaved.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from _common import daemon, print_table, short_tmpdir, time_calls

from claif_client import Client

N = int(os.environ.get("BENCH_N", "4000"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@contextmanager
def redis_server() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench_redis: redis-server is not installed (apt-get install redis-server)")
    tmp = short_tmpdir()
    path = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", path, "--save", "", "--dir", tmp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    import redis

    with redis_server() as path:
        url = f"unix://{path}"
        shared = {"CLAIF_CACHE__BACKEND": "redis", "CLAIF_REDIS__URL": url}
        with daemon(shared) as warm_sock, \
                daemon({**shared, "CLAIF_CACHE__MEMORY_MAX_BYTES": "1"}) as cold_sock, \
                daemon({"CLAIF_CACHE__MEMORY_MAX_BYTES": "1"}) as local_sock, \
                Client(warm_sock) as warm, Client(cold_sock) as cold, Client(local_sock) as local:
            first = warm.complete(MESSAGES, model="echo/bench")
            assert cold.complete(MESSAGES, model="echo/bench").cached == "exact"
            local.complete(MESSAGES, model="echo/bench")
            time.sleep(0.3)  # the local daemon's write-behind reaches SQLite
            assert local.complete(MESSAGES, model="echo/bench").cached == "exact"
            r = redis.Redis(unix_socket_path=path)
            r.set("bench:value", msgspec.msgpack.encode(first) + b"x" * 64)
            rows = {
                "redis backend, near cache warm (memory hit)": lambda: warm.complete(MESSAGES, model="echo/bench"),
                "redis backend, near cache cold (a Redis GET)": lambda: cold.complete(MESSAGES, model="echo/bench"),
                "local backend, memory cold (a SQLite read)": lambda: local.complete(MESSAGES, model="echo/bench"),
                "bare redis-py GET, same server": lambda: r.get("bench:value"),
            }
            samples: dict[str, list[float]] = {name: [] for name in rows}
            for _ in range(4):
                for name, fn in rows.items():
                    samples[name] += time_calls(fn, N // 4, warmup=100)
    p50 = {name: statistics.median(s) for name, s in samples.items()}
    base = p50["bare redis-py GET, same server"]
    table = [{"row": name, "p50_us": value * 1e6, "vs_bare_get": value / base} for name, value in p50.items()]
    print_table("a cache hit through the Redis backend, interleaved rounds", table)
    print(msgspec.json.encode({"bench": "redis", "rows": table}).decode())


if __name__ == "__main__":
    main()
