"""The upstream client (aiohttp; httpcore until it was measured out), all in one
run, all against claif-sim over loopback HTTP. `BENCH_BEFORE=REV` adds the
daemon of an earlier commit (its claifd/, claif_sim/ and client code, run
from `git archive` in this venv) as one more variant: before and after, in
one run.

0. Legs: one call at a time from this process, each HTTP client alone
   (httpx, httpx over aiohttp, aiohttp, the daemon's aiohttp lane, and a
   request written straight to an asyncio stream, the floor): what each
   client costs.
1. A miss at 0 ms upstream, through the cache (every prompt new): the thin
   client -> claifd -> sim, with each transport, against a user's own direct
   `httpx.AsyncClient` -> sim with httpx's default transport and with the
   aiohttp one, interleaved. Targets: claifd <= 1.0 x direct httpx,
   <= 1.15 x direct httpx+aiohttp.
2. Batches: 1000 x 50 ms at concurrency 50 (cache bypassed, and through the
   cache) and 5000 x 20 ms at concurrency 200, with each transport; wall time
   against the ideal (n / concurrency x latency; target <= 1.10, best of 3),
   and the daemon's CPU per upstream call (psutil user+sys over the batch).
3. The simulator's own CPU per request (its share of the baseline).

Everything runs twice: against the full simulator (h11, ~170 us of CPU per
request: a third of the direct baseline, and at concurrency 50 it alone
holds a direct batch at ~1.13 x ideal) and against `claif-sim --fast` (the
same answers from an asyncio protocol, ~35 us per request), so the daemon's
own share is visible. BENCH_SIM=full|fast runs one.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import anyio
import httpx
import msgspec
import psutil
from _common import code_of, cpu_seconds, daemon, daemon_process, print_table, start_sim

from claif_client import Client

TRANSPORTS = ("aiohttp",)
BEFORE = os.environ.get("BENCH_BEFORE", "")
# That commit's pool.transport (its default when unset).
BEFORE_TRANSPORT = os.environ.get("BENCH_BEFORE_TRANSPORT", "")
N = int(os.environ.get("BENCH_N", "1200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello bench"}]}
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}



def sim_post(url: str, path: str, doc: object) -> None:
    httpx.post(url + path, json=doc).raise_for_status()


def env_for(url: str, transport: str, **extra: str) -> dict[str, str]:
    env = {"CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1", "OPENAI_API_KEY": "sk-bench", **extra}
    if transport.startswith("before"):
        env.update(code_of(BEFORE))  # the earlier commit's code
        if BEFORE_TRANSPORT:
            env["CLAIF_POOL__TRANSPORT"] = BEFORE_TRANSPORT
    else:
        env["CLAIF_POOL__TRANSPORT"] = transport
    return env


def variants() -> tuple[str, ...]:
    return (f"before {BEFORE} {BEFORE_TRANSPORT or 'default'}", *TRANSPORTS) if BEFORE else TRANSPORTS




def direct(url: str, n: int, transport: str, start: int) -> list[float]:
    """A user's own httpx.AsyncClient -> sim, one request at a time, each prompt new."""
    samples: list[float] = []

    async def run() -> None:
        extra = {}
        if transport == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            extra["transport"] = AiohttpTransport()
        async with httpx.AsyncClient(**extra) as client:  # type: ignore[arg-type]
            for i in range(n + 50):
                body = {**BODY, "messages": [{"role": "user", "content": f"direct {transport} {start + i}"}]}
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/chat/completions", content=msgspec.json.encode(body), headers=HEADERS)
                msgspec.json.decode(r.content)
                if i >= 50:
                    samples.append(time.perf_counter() - t0)

    anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True})
    return samples


def through(client: Client, n: int, tag: str) -> list[float]:
    samples = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        client.complete(f"miss {tag} {i}", model="openai/gpt-4o-mini")  # a new prompt: a cache miss
        if i >= 50:
            samples.append(time.perf_counter() - t0)
    return samples


def legs(url: str) -> list[dict[str, object]]:
    """Each HTTP client alone, one call at a time on a kept-alive connection, interleaved."""
    import asyncio

    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    from claifd.config import build_config
    from claifd.pool import HttpPool

    target = url + "/v1/chat/completions"

    async def run() -> dict[str, list[float]]:
        hx = httpx.AsyncClient()
        hxa = httpx.AsyncClient(transport=AiohttpTransport())  # type: ignore[arg-type]
        session = aiohttp.ClientSession()
        pool = HttpPool(build_config({"pool": {"transport": "aiohttp"}}).pool)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))

        async def v_httpx(body: bytes) -> bytes:
            return (await hx.post(target, content=body, headers=HEADERS)).content

        async def v_httpx_aiohttp(body: bytes) -> bytes:
            return (await hxa.post(target, content=body, headers=HEADERS)).content

        async def v_aiohttp(body: bytes) -> bytes:
            async with session.post(target, data=body, headers=HEADERS) as r:
                return await r.read()

        async def v_lane(body: bytes) -> bytes:
            lane = pool.acquire()
            try:
                return await (await lane.send("POST", target, HEADERS, body)).aread()
            finally:
                pool.release(lane)

        async def v_floor(body: bytes) -> bytes:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer sk-bench\r\n"
                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (host.encode(), len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            return await reader.readexactly(length)

        variants = {"httpx (httpcore)": v_httpx, "httpx over aiohttp": v_httpx_aiohttp, "aiohttp": v_aiohttp,
                    "claifd aiohttp lane": v_lane, "asyncio stream, request written by hand": v_floor}
        out: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(4):
            for name, call in variants.items():
                for i in range(N // 4 + 50):
                    body = msgspec.json.encode({**BODY, "messages": [{"role": "user", "content": f"leg {r} {i}"}]})
                    t0 = time.perf_counter()
                    msgspec.json.decode(await call(body))
                    if i >= 50:
                        out[name].append(time.perf_counter() - t0)
        await hx.aclose()
        await hxa.aclose()
        await session.close()
        await pool.aclose()
        writer.close()
        return out

    import uvloop

    out = uvloop.run(run())
    floor = statistics.median(out["asyncio stream, request written by hand"])
    return [{"name": name, "p50_us": statistics.median(s) * 1e6, "vs_floor": statistics.median(s) / floor}
            for name, s in out.items()]


def misses(url: str, sim: psutil.Process) -> list[dict[str, object]]:
    out: dict[str, list[float]] = {"direct httpx": [], "direct httpx+aiohttp": [],
                                   **{f"claifd {t}": [] for t in variants()}}
    sim_cpu = 0.0
    sim_calls = 0
    with contextlib.ExitStack() as stack:
        clients = {f"claifd {t}": Client(stack.enter_context(daemon(env_for(url, t)))) for t in variants()}
        for r in range(4):  # interleaved: machine drift hits every variant alike
            before = cpu_seconds(sim)
            out["direct httpx"] += direct(url, N // 4, "httpcore", r * N)
            sim_cpu += cpu_seconds(sim) - before
            sim_calls += N // 4 + 50
            out["direct httpx+aiohttp"] += direct(url, N // 4, "aiohttp", r * N)
            for name, client in clients.items():
                out[name] += through(client, N // 4, f"{name} {r}")
        for c in clients.values():
            c.close()
    base = statistics.median(out["direct httpx"])
    fast = statistics.median(out["direct httpx+aiohttp"])
    rows: list[dict[str, object]] = []
    for name, samples in out.items():
        p50 = statistics.median(samples)
        rows.append({"name": name, "p50_us": p50 * 1e6, "vs_direct_httpx": p50 / base,
                     "vs_direct_aiohttp": p50 / fast})
    rows.append({"name": "simulator CPU per request (its share of the direct baseline)",
                 "p50_us": sim_cpu / sim_calls * 1e6, "vs_direct_httpx": sim_cpu / sim_calls / base})
    return rows


def batch(url: str, transport: str, n: int, conc: int, latency_ms: float, cache: bool) -> dict[str, object]:
    sim_post(url, "/_sim/config", {"latency_ms": latency_ms})
    ideal = n / conc * latency_ms / 1000
    best = None
    cpu_per_call = None
    extra = {"CLAIF_PROVIDERS__OPENAI__MAX_CONCURRENCY": str(conc), "CLAIF_POOL__MAX_CONNECTIONS": str(conc)}
    with daemon(env_for(url, transport, **extra)) as sock:
        proc = daemon_process(sock)
        with Client(sock, timeout=600) as client:
            client.batch([{"prompt": f"warm {i}", "model": "openai/m", "cache": "bypass"} for i in range(conc)],
                         concurrency=conc)
            for r in range(ROUNDS):
                reqs = [{"prompt": f"{transport} {cache} {r} q{i}", "model": "openai/m",
                         "cache": "use" if cache else "bypass"} for i in range(n)]
                before = cpu_seconds(proc)
                t0 = time.perf_counter()
                items = client.batch(reqs, concurrency=conc)
                wall = time.perf_counter() - t0
                used = cpu_seconds(proc) - before
                assert all(item.response is not None for item in items), "a batch item failed"
                if best is None or wall < best:
                    best, cpu_per_call = wall, used / n
    sim_post(url, "/_sim/config", {"latency_ms": 0})
    assert best is not None and cpu_per_call is not None
    return {"name": f"{n} x {latency_ms:g} ms, concurrency {conc}, {'through the cache' if cache else 'bypassed'}",
            "transport": transport, "best_wall_s": best, "ideal_s": ideal, "ratio": best / ideal,
            "daemon_cpu_ms_per_call": cpu_per_call * 1000}


def direct_batch(url: str, n: int, conc: int, latency_ms: float) -> dict[str, object]:
    """The same batch from a user's own aiohttp session: the simulator's own share."""
    import aiohttp

    sim_post(url, "/_sim/config", {"latency_ms": latency_ms})
    best = None

    async def run() -> float:
        limit = anyio.Semaphore(conc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:
            async def one(i: int) -> None:
                async with limit:
                    body = {**BODY, "messages": [{"role": "user", "content": f"direct batch {i}"}]}
                    async with session.post(url + "/v1/chat/completions", data=msgspec.json.encode(body),
                                            headers=HEADERS) as r:
                        await r.read()

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            return time.perf_counter() - t0

    for _ in range(ROUNDS):
        wall = anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True})
        best = wall if best is None else min(best, wall)
    sim_post(url, "/_sim/config", {"latency_ms": 0})
    assert best is not None
    ideal = n / conc * latency_ms / 1000
    return {"name": f"{n} x {latency_ms:g} ms, concurrency {conc}, direct aiohttp (no daemon)", "transport": "-",
            "best_wall_s": best, "ideal_s": ideal, "ratio": best / ideal}


def run_against(fast: bool) -> list[dict[str, object]]:
    label = "claif-sim --fast" if fast else "claif-sim (full, h11)"
    proc, url = start_sim(fast)
    try:
        sim = psutil.Process(proc.pid)
        leg_rows = legs(url)
        print_table(f"{label}: each HTTP client alone, one call at a time (a kept-alive connection)", leg_rows)
        rows = misses(url, sim)
        print_table(f"{label}: a miss at 0 ms upstream, through the cache (targets: claifd <= 1.0 x direct "
                    "httpx, <= 1.15 x direct httpx+aiohttp)", rows)
        b = [direct_batch(url, 1000, 50, 50)]
        for transport in variants():
            b.append(batch(url, transport, 1000, 50, 50, cache=False))
            b.append(batch(url, transport, 1000, 50, 50, cache=True))
            b.append(batch(url, transport, 5000, 200, 20, cache=False))
        print_table(f"{label}: batches, best of {ROUNDS} (target for 1000 x 50 ms: ratio <= 1.10)", b)
        for row in leg_rows + rows + b:
            row["sim"] = "fast" if fast else "full"
        return leg_rows + rows + b
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    which = os.environ.get("BENCH_SIM", "both")
    out = []
    for fast in (False, True):
        if which == "both" or which == ("fast" if fast else "full"):
            out += run_against(fast)
    print(msgspec.json.encode({"bench": "transport", "rows": out}).decode())


if __name__ == "__main__":
    main()
