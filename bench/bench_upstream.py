"""Upstream benchmarks, all against claif-sim over loopback HTTP.

Requests bypass the response cache where the point is the upstream path.

1. Per-request overhead: thin client -> claifd -> sim (zero latency), against
   a direct httpx.AsyncClient -> sim with the same request, interleaved in the
   same run. Target: median ratio <= 1.10.
2. Batch: 1000 distinct requests (through the cache, all misses), 50 ms
   simulated latency, concurrency 50; the ideal is 1000 / 50 * 50 ms = 1.0 s.
   Target: wall <= 1.10 x ideal.
3. 200 concurrent streamed requests through one daemon: all complete, none lost.
"""

from __future__ import annotations

import os
import statistics
import time

import anyio
import httpx
import msgspec
from _common import daemon, print_table, start_sim, summarize

from claif_client import AsyncClient, Client

N = int(os.environ.get("BENCH_N", "2000"))
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello bench"}]}
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}



def sim_call(url: str, path: str, doc: object | None = None) -> dict:  # type: ignore[type-arg]
    r = httpx.post(url + path, json=doc) if doc is not None else httpx.get(url + path)
    return r.json()  # type: ignore[no-any-return]


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {
        "CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
        "CLAIF_PROVIDERS__ANTHROPIC__BASE_URL": url,
        "OPENAI_API_KEY": "sk-bench",
        "ANTHROPIC_API_KEY": "sk-bench",
        **extra,
    }


def direct_samples(url: str, n: int) -> list[float]:
    """A direct httpx.AsyncClient -> sim, one request at a time."""
    samples: list[float] = []
    content = msgspec.json.encode(BODY)

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            for i in range(n + 100):
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/chat/completions", content=content, headers=HEADERS)
                msgspec.json.decode(r.content)
                if i >= 100:  # warm-up
                    samples.append(time.perf_counter() - t0)

    anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True})
    return samples


def daemon_samples(client: Client, n: int) -> list[float]:
    # cache=False: every call must reach the simulator, like the direct ones.
    messages = BODY["messages"]
    for _ in range(100):
        client.complete(messages, model="openai/gpt-4o-mini", cache=False)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.complete(messages, model="openai/gpt-4o-mini", cache=False)
        samples.append(time.perf_counter() - t0)
    return samples


def overhead(url: str, latency_ms: float, n: int) -> list[dict[str, object]]:
    sim_call(url, "/_sim/config", {"latency_ms": latency_ms})
    direct: list[float] = []
    through: list[float] = []
    with daemon(env_for(url)) as sock:
        client = Client(sock)
        for _ in range(4):  # interleave so machine drift hits both alike
            direct += direct_samples(url, n // 4)
            through += daemon_samples(client, n // 4)
        client.close()
    sim_call(url, "/_sim/config", {"latency_ms": 0})
    base = summarize(f"direct httpx.AsyncClient -> sim ({latency_ms:g} ms)", direct)
    return [base, summarize(f"Client -> claifd -> sim ({latency_ms:g} ms)", through, statistics.median(direct))]


def batch(url: str) -> list[dict[str, object]]:
    sim_call(url, "/_sim/reset", {})
    sim_call(url, "/_sim/config", {"latency_ms": 50})
    n, conc = 1000, 50
    ideal = n / conc * 0.05
    with daemon(env_for(url)) as sock:
        with Client(sock) as client:
            client.batch([{"messages": [{"role": "user", "content": "warm"}], "model": "openai/m"}] * 50, concurrency=50)
            requests = [{"messages": [{"role": "user", "content": f"q{i}"}], "model": "openai/m"} for i in range(n)]
            t0 = time.perf_counter()
            items = client.batch(requests, concurrency=conc)
            wall = time.perf_counter() - t0
    ok = sum(1 for i in items if i.response is not None and i.response.text == f"Simulated reply to: q{i.index}")
    stats = sim_call(url, "/_sim/stats")
    sim_call(url, "/_sim/config", {"latency_ms": 0})
    return [{"name": f"batch {n} x 50 ms, concurrency {conc}", "ok": ok, "wall_s": wall, "ideal_s": ideal,
             "ratio": wall / ideal, "sim_peak_concurrency": stats["peak_concurrency"]}]


def streams(url: str) -> list[dict[str, object]]:
    sim_call(url, "/_sim/reset", {})
    sim_call(url, "/_sim/config", {"token_delay_ms": 5})
    n = 200
    text = " ".join(f"w{i}" for i in range(20))
    expected = "Simulated reply to: " + text
    results: dict[int, str] = {}

    async def run(sock: str) -> float:
        clients = [AsyncClient(sock) for _ in range(4)]

        async def one(i: int) -> None:
            c = clients[i % len(clients)]
            model = "anthropic/claude-sonnet-4-5" if i % 2 else "openai/gpt-4o-mini"
            # cache=False: 200 real upstream streams, not one coalesced call.
            results[i] = "".join([d async for d in c.stream(text, model=model, cache=False)])

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        wall = time.perf_counter() - t0
        for c in clients:
            await c.aclose()
        return wall

    with daemon(env_for(url, CLAIF_PROVIDERS__OPENAI__MAX_CONCURRENCY="200",
                        CLAIF_PROVIDERS__ANTHROPIC__MAX_CONCURRENCY="200")) as sock:
        wall = anyio.run(run, sock, backend="asyncio", backend_options={"use_uvloop": True})
    complete = sum(1 for t in results.values() if t == expected)
    stats = sim_call(url, "/_sim/stats")
    sim_call(url, "/_sim/config", {"token_delay_ms": 0})
    return [{"name": f"{n} concurrent streams (22 tokens, 5 ms apart)", "complete": complete, "lost": n - complete,
             "wall_s": wall, "sim_peak_concurrency": stats["peak_concurrency"]}]


def main() -> None:
    proc, url = start_sim()
    try:
        rows = overhead(url, 0, N) + overhead(url, 5, N // 4)
        print_table("per-request overhead vs direct httpx (target: ratio <= 1.10)", rows)
        b = batch(url)
        print_table("batch (target: wall <= 1.10 x ideal)", b)
        s = streams(url)
        print_table("concurrent streams (target: all complete, none lost)", s)
        print(msgspec.json.encode({"bench": "upstream", "rows": rows + b + s}).decode())
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
