"""The HTTP front (claifd/front.py), in one run with one keep-alive client
(`httpx.Client`, and the `openai` SDK) for every row:

1. the floor: a do-nothing HTTP/1.1 server (an asyncio protocol answering a
   fixed 200, no parsing beyond the end of the request) on loopback TCP, in
   a process of its own;
2. a cache hit through the front (`POST /v1/chat/completions`, TCP, token);
3. LiteLLM proxy's cache hit, when `litellm[proxy]` is installed
   (LITELLM_LOCAL_MODEL_COST_MAP=True keeps it offline; the row is left out
   without it);
4. a miss at 0 ms upstream: its latency over a direct call to the simulator
   with the same client (what the front adds).

Targets: the front's hit <= 1.25 x the floor with the same httpx client (issue 29).
With the openai SDK the ratio also carries the SDK's own parsing of a whole
ChatCompletion (the floor answers `{}`), which no server can remove.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
from _common import daemon, print_table, start_sim, time_calls

from claif_client import Client

BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


NOTHING = r"""
import asyncio, socket, sys

class Nothing(asyncio.Protocol):
    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(self.RESPONSE)

async def main():
    server = await asyncio.get_running_loop().create_server(Nothing, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@contextmanager
def nothing_server() -> Iterator[str]:
    """The floor: a do-nothing HTTP/1.1 server in a process of its own (as the daemon is)."""
    proc = subprocess.Popen([sys.executable, "-c", NOTHING], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{proc.stdout.readline().strip()}"
    finally:
        proc.terminate()
        proc.wait()


LITELLM = os.environ.get("CLAIF_BENCH_LITELLM", str(Path(__file__).parent / ".litellm" / "bin" / "litellm"))
LITELLM_KEY = "sk-litellm-bench-master-key-0123456789"


@contextmanager
def litellm_proxy(sim_url: str) -> Iterator[str | None]:
    """LiteLLM's proxy with its in-memory cache, in front of the same simulator
    (`make bench` installs it in bench/.litellm); None when it is not installed."""
    if not os.access(LITELLM, os.X_OK):
        print(f"LiteLLM rows left out: no {LITELLM} (make bench installs it)")
        yield None
        return
    tmp = tempfile.mkdtemp()
    config = Path(tmp) / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: {sim_url}/v1\n      api_key: sk-bench\n"
        "litellm_settings:\n  cache: true\n  cache_params:\n    type: local\n  telemetry: false\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=LITELLM_KEY)
    proc = subprocess.Popen([LITELLM, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health/liveliness").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def interleaved(rows: dict[str, callable], rounds: int = 8, n: int = 250) -> dict[str, list[float]]:  # type: ignore[valid-type]
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            samples[name] += time_calls(fn, n, warmup=30)
    return samples


def main() -> None:
    proc, sim_url = start_sim(fast=True)
    env = {"CLAIF_PROVIDERS__OPENAI__BASE_URL": sim_url + "/v1", "OPENAI_API_KEY": "sk-bench",
           "CLAIF_SERVER__HTTP__ENABLED": "true", "CLAIF_SERVER__HTTP__LISTEN": "127.0.0.1:0"}
    try:
        with daemon(env) as sock, nothing_server() as floor_url, litellm_proxy(sim_url) as litellm, \
                Client(sock) as c:
            info = c.status()["http"]
            token = open(info["token_file"]).read().strip()
            front = f"http://{info['listen']}"
            client = httpx.Client(headers={"authorization": f"Bearer {token}"})
            import openai

            sdk = openai.OpenAI(base_url=front + "/v1", api_key=token, max_retries=0)
            floor_sdk = openai.OpenAI(base_url=floor_url + "/v1", api_key="x", max_retries=0)
            client.post(front + "/v1/chat/completions", json=BODY).raise_for_status()
            miss_body = dict(BODY)
            counter = iter(range(10**9))

            def front_miss() -> None:
                body = {**miss_body, "messages": [{"role": "user", "content": f"miss {next(counter)}"}]}
                client.post(front + "/v1/chat/completions", json=body).raise_for_status()

            def direct_miss() -> None:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"direct {next(counter)}"}]}
                client.post(sim_url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer x"})

            rows = {
                "floor: do-nothing server (httpx)": lambda: client.post(floor_url + "/v1/chat/completions", json=BODY),
                "front cache hit (httpx)": lambda: client.post(front + "/v1/chat/completions", json=BODY),
                "floor: do-nothing server (openai SDK)": lambda: floor_sdk.chat.completions.with_raw_response.create(
                    **BODY),
                "front cache hit (openai SDK)": lambda: sdk.chat.completions.create(**BODY),
                "direct call to the simulator (httpx)": direct_miss,
                "front miss, 0 ms upstream (httpx)": front_miss,
            }
            if litellm is not None:
                lheaders = {"authorization": f"Bearer {LITELLM_KEY}"}
                lbody = {**BODY, "model": "gpt-4o-mini"}
                client.post(litellm + "/v1/chat/completions", json=lbody, headers=lheaders).raise_for_status()

                def litellm_miss() -> None:
                    body = {**lbody, "messages": [{"role": "user", "content": f"litellm {next(counter)}"}]}
                    client.post(litellm + "/v1/chat/completions", json=body, headers=lheaders).raise_for_status()

                rows["LiteLLM proxy cache hit (httpx)"] = lambda: client.post(
                    litellm + "/v1/chat/completions", json=lbody, headers=lheaders)
                rows["LiteLLM proxy miss, 0 ms upstream (httpx)"] = litellm_miss
            samples = interleaved(rows, rounds=4 if litellm is not None else 8)
    finally:
        proc.terminate()
        proc.wait()
    p50 = {name: statistics.median(s) for name, s in samples.items()}
    table = []
    for name, value in p50.items():
        base = (p50["floor: do-nothing server (openai SDK)"] if "SDK" in name else
                p50["direct call to the simulator (httpx)"] if "miss" in name or "direct" in name else
                p50["floor: do-nothing server (httpx)"])
        table.append({"row": name, "p50_us": value * 1e6, "ratio": value / base,
                      "target": "<= 1.25" if name == "front cache hit (httpx)" else ""})
    print_table("HTTP front, one keep-alive client per column, interleaved rounds", table)
    direct = p50["direct call to the simulator (httpx)"]
    added = (p50["front miss, 0 ms upstream (httpx)"] - direct) * 1e6
    print(f"a miss through the front adds {added:.0f} us over a direct call")
    summary: dict[str, float] = {"miss_added_us": added}
    if "LiteLLM proxy cache hit (httpx)" in p50:
        summary["litellm_hit_over_front_hit"] = p50["LiteLLM proxy cache hit (httpx)"] / p50["front cache hit (httpx)"]
        summary["litellm_miss_added_us"] = (p50["LiteLLM proxy miss, 0 ms upstream (httpx)"] - direct) * 1e6
        print(f"LiteLLM's hit takes {summary['litellm_hit_over_front_hit']:.1f} x the front's; "
              f"its miss adds {summary['litellm_miss_added_us']:.0f} us over a direct call")
    print(msgspec.json.encode({"bench": "front", "rows": table, **summary}).decode())


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    time.sleep(0)
    main()
