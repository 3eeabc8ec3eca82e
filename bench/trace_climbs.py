"""How a request walks the daemon's layers: a socket `complete` and an HTTP
chat request (each a miss, plain), traced call by call in a real daemon.

A climb is a call from a module into one of a higher layer (a layer nearer
the fronts): the walk goes down from the front to the upstream and comes
back by returning, so each climb is a callback or a reach back up. How it
is traced: the daemon runs in a subprocess under `sys.setprofile` (its event
loop thread only), recording each call between two claifd modules with the
time; this process marks when each traced request starts and ends
(time.monotonic is one clock for both processes), and the calls in a window
are that request's (the health probes and the cache writer are quiet then:
their intervals are set long). Run: python bench/trace_climbs.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

# Layers, from the fronts down. A module not listed (errors, types,
# config, tasks...) is a utility: calls to and from it are not counted.
LAYERS = {
    "claifd.server": 0, "claifd.dispatch": 0, "claifd.http.server": 0,
    "claifd.completion_requests": 1, "claifd.http.front": 1, "claifd.http.sinks": 1,
    "claifd.completions": 2,
    "claifd.cache.service": 3, "claifd.cache.flight": 3, "claifd.cache.tier": 3, "claifd.cache.redis_tier": 3,
    "claifd.cache.memory": 3, "claifd.cache.entry": 3, "claifd.cache.keys": 3, "claifd.cache.policy": 3,
    "claifd.cache.replay": 3, "claifd.semantic.service": 3, "claifd.semantic.tier": 3,
    "claifd.sessions.service": 3, "claifd.optimizer": 3, "claifd.auto": 3, "claifd.providers.registry": 3,
    "claifd.fallbacks": 3,
    "claifd.providers.http": 4, "claifd.providers.openai": 4, "claifd.providers.anthropic": 4,
    "claifd.providers.azure": 4, "claifd.providers.echo": 4,
    "claifd.providers.keys": 5, "claifd.providers.circuit": 5, "claifd.pool": 5, "claifd.transport": 5,
}


def _daemon(out: str, argv: list[str]) -> None:
    """This file as the daemon: claifd's main under a profiler that keeps
    (time, caller module, callee module, callee function) for calls between
    claifd modules, written to `out` at exit."""
    calls: list[tuple[float, str, str, str]] = []
    now = time.monotonic

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        if not callee.startswith("claifd."):
            return
        back = frame.f_back
        caller = back.f_globals.get("__name__", "") if back is not None else ""
        if caller.startswith("claifd.") and caller != callee:
            calls.append((now(), caller, callee, frame.f_code.co_name))

    import atexit

    atexit.register(lambda: Path(out).write_bytes(msgspec.json.encode(calls)))
    from claifd.cli import main

    sys.setprofile(profile)
    try:
        main(argv)
    finally:
        sys.setprofile(None)


def climbs(calls: list[tuple[float, str, str, str]], start: float, end: float) -> tuple[int, list[str]]:
    seen = []
    for at, caller, callee, name in calls:
        if not start <= at <= end or caller not in LAYERS or callee not in LAYERS:
            continue
        if LAYERS[callee] < LAYERS[caller]:
            seen.append(f"{caller} -> {callee}.{name}")
    return len(seen), seen


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import start_sim, wait_for_socket

    from claif_client import Client

    sim, url = start_sim()
    tmp = tempfile.mkdtemp(prefix="clt", dir="/tmp")
    sock, out = f"{tmp}/d.sock", f"{tmp}/calls.json"
    env = dict(os.environ, HOME=tmp, CLAIF_POOL__PROXY="", CLAIF_PROVIDERS__OPENAI__BASE_URL=url + "/v1",
               OPENAI_API_KEY="sk-trace", CLAIF_SERVER__HTTP__ENABLED="true",
               CLAIF_SERVER__HTTP__LISTEN="127.0.0.1:0", CLAIF_HEALTH__INTERVAL="3600")
    daemon = subprocess.Popen([sys.executable, __file__, "--daemon", out, "--socket", sock, "--log-level", "warning"],
                              env=env, cwd=tmp)
    windows = {}
    try:
        wait_for_socket(sock, timeout=30)
        with Client(sock) as c:
            front = c.status()["http"]["listen"]
            token = (Path(tmp) / ".claif" / "http-token").read_text().strip()
            http = httpx.Client(base_url=f"http://{front}", headers={"authorization": f"Bearer {token}"})
            c.complete("warm the socket", model="openai/gpt-4o-mini")
            http.post("/v1/chat/completions", json={"model": "openai/gpt-4o-mini",
                                                    "messages": [{"role": "user", "content": "warm the front"}]})
            time.sleep(0.3)  # the cache's write-behind is done
            start = time.monotonic()
            c.complete("a socket miss", model="openai/gpt-4o-mini")
            windows["socket complete (a miss)"] = (start, time.monotonic())
            time.sleep(0.3)
            start = time.monotonic()
            r = http.post("/v1/chat/completions", json={"model": "openai/gpt-4o-mini",
                                                        "messages": [{"role": "user", "content": "an http miss"}]})
            windows["HTTP chat request (a miss)"] = (start, time.monotonic())
            assert r.status_code == 200, r.text
            http.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        sim.terminate()
        sim.wait()
    calls = msgspec.json.decode(Path(out).read_bytes())
    for name, (start, end) in windows.items():
        count, edges = climbs(calls, start, end)
        inside = sum(1 for at, *_ in calls if start <= at <= end)
        print(f"{name}: {count} climbs in {inside} calls between claifd modules")
        for edge in edges:
            print(f"    {edge}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--daemon":
        _daemon(sys.argv[2], sys.argv[3:])
    else:
        main()
