"""Foundation benchmark: raw floor vs `ping` and echo `complete` through claifd.

All three are measured in the same run with the same kind of client (a
blocking Unix socket from this process), so the ratios hold on a noisy
machine even when absolute times move. Target: ping p50 <= 1.5x the floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
from _common import daemon, floor_round_trip, floor_server, print_table, summarize, time_calls

from claif_client import Client

N = int(os.environ.get("BENCH_N", "20000"))


def floor_samples(n: int) -> list[float]:
    with floor_server() as path:
        return time_calls(floor_round_trip(path), n)


def cli_wall_times(sock: str, n: int = 20) -> tuple[list[float], list[float]]:
    """Wall time of `claif ping` against a bare interpreter start, interleaved."""
    import time

    claif = str(Path(sys.executable).with_name("claif"))
    bare, ping = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([claif, "--socket", sock, "ping"], check=True, stdout=subprocess.DEVNULL)
        ping.append(time.perf_counter() - t0)
    return bare, ping


def main() -> None:
    rows = []
    # Interleave rounds so drift on the machine hits every variant alike.
    floor: list[float] = []
    ping: list[float] = []
    complete: list[float] = []
    with daemon() as sock:
        client = Client(sock)
        messages = [{"role": "user", "content": "hello"}]
        for _ in range(4):
            floor += floor_samples(N // 4)
            ping += time_calls(client.ping, N // 4)
            complete += time_calls(lambda: client.complete(messages, model="echo/bench", cache=False), N // 8)
        client.close()
        bare, cli_ping = cli_wall_times(sock)
    f = summarize("floor (raw echo, same framing, uvloop)", floor)
    rows.append(f)
    rows.append(summarize("ping via claifd + Client", ping, f["p50_us"] / 1e6))  # type: ignore[operator]
    rows.append(summarize("complete, echo provider, cache bypassed", complete, f["p50_us"] / 1e6))  # type: ignore[operator]
    print_table("foundation: round trips over the Unix socket (target: ping ratio <= 1.5)", rows)
    b = summarize("python -c pass (interpreter start)", bare)
    cli_rows = [b, summarize("claif ping (whole CLI process)", cli_ping, b["p50_us"] / 1e6)]  # type: ignore[operator]
    for r in cli_rows:
        r["p50_ms"] = r.pop("p50_us") / 1000  # type: ignore[operator]
        r["p99_ms"] = r.pop("p99_us") / 1000  # type: ignore[operator]
    print_table("CLI wall time (target: claif ping well under 150 ms)", cli_rows)
    print(msgspec.json.encode({"bench": "foundation", "rows": rows + cli_rows}).decode())


if __name__ == "__main__":
    main()
