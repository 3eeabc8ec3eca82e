"""Helpers shared by the benchmarks: processes, timing and tables."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def short_tmpdir() -> str:
    # AF_UNIX paths are limited to ~107 bytes: keep them short.
    return tempfile.mkdtemp(prefix="clb", dir="/tmp")


def wait_for_socket(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {path}")


@contextmanager
def daemon(extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> Iterator[str]:
    """A real claifd on a temporary socket; yields the socket path."""
    tmp = short_tmpdir()
    sock = os.path.join(tmp, "d.sock")
    # The simulator is on loopback: never through a proxy of the environment.
    env = dict(os.environ, HOME=tmp, CLAIF_POOL__PROXY="", **(extra_env or {}))
    proc = subprocess.Popen(
        [str(BIN / "claifd"), "--socket", sock, "--log-level", "warning", *(args or [])],
        env=env, cwd=tmp, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_socket(sock)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def time_calls(fn: Callable[[], object], n: int, warmup: int = 500) -> list[float]:
    """Seconds per call, one sample per call."""
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarize(name: str, samples: list[float], floor_p50: float | None = None) -> dict[str, object]:
    p50 = statistics.median(samples)
    row: dict[str, object] = {"name": name, "n": len(samples), "p50_us": p50 * 1e6, "p99_us": pct(samples, 0.99) * 1e6}
    if floor_p50:
        row["ratio"] = p50 / floor_p50
    return row


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    print(f"\n## {title}\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


@contextmanager
def floor_server() -> Iterator[str]:
    """The raw floor (bench/floor_server.py) on a temporary socket; yields its path."""
    tmp = short_tmpdir()
    path = os.path.join(tmp, "floor.sock")
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "floor_server.py"), path], stdout=subprocess.DEVNULL)
    try:
        wait_for_socket(path)
        yield path
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def floor_round_trip(path: str) -> Callable[[], None]:
    """One ping-sized frame to the floor and its echo back, on a blocking socket."""
    from claif_client.protocol import Ping, encode_frame

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    frame = bytes(encode_frame(Ping(id=1)))
    size = len(frame)

    def round_trip() -> None:
        sock.sendall(frame)
        got = 0
        while got < size:
            got += len(sock.recv(65536))

    return round_trip


def start_sim(fast: bool = False) -> tuple[subprocess.Popen[str], str]:
    """claif-sim on a free loopback port: (process, base URL). `fast`: its
    JSON-only mode, for throughput benchmarks (no streams or faults)."""
    proc = subprocess.Popen([sys.executable, "-m", "claif_sim", "--port", "0", *(["--fast"] if fast else [])],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().removeprefix("listening on ").split(" ")[0]


def daemon_process(sock: str) -> Any:
    """The psutil.Process of the claifd child serving `sock` (for its CPU times)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if sock in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise RuntimeError(f"no daemon process for {sock}")


def cpu_seconds(proc: Any) -> float:
    """User + system CPU seconds of a psutil.Process so far."""
    times = proc.cpu_times()
    return float(times.user + times.system)


_TREES: dict[str, str] = {}


def code_of(rev: str) -> dict[str, str]:
    """The environment that runs an earlier commit's daemon (its claifd/,
    claif_sim/ and client code, unpacked once from `git archive` and put
    first on PYTHONPATH) in this venv: a "before" in the same run."""
    if rev not in _TREES:
        tmp = tempfile.mkdtemp(prefix="claif-before-")
        archive = subprocess.run(["git", "archive", rev, "claifd", "claif_sim", "client/claif_client"],
                                 check=True, capture_output=True, cwd=ROOT).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        _TREES[rev] = tmp
    return {"PYTHONPATH": f"{_TREES[rev]}:{_TREES[rev]}/client"}
