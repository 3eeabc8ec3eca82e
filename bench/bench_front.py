"""The HTTP front (claifd/front.py), in one run with one keep-alive client
(`httpx.Client`, and the `openai` SDK) for every row:

1. the floor: a do-nothing HTTP/1.1 server (an asyncio protocol answering a
   fixed 200, no parsing beyond the end of the request) on loopback TCP;
2. a cache hit through the front (`POST /v1/chat/completions`, TCP, token);
3. LiteLLM proxy's cache hit, when `litellm[proxy]` is installed
   (LITELLM_LOCAL_MODEL_COST_MAP=True keeps it offline; the row is left out
   without it);
4. a miss at 0 ms upstream: its latency over a direct call to the simulator
   with the same client (what the front adds).

Targets: the front's hit <= 1.3 x the floor with the same client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import msgspec
from _common import daemon, print_table, start_sim, time_calls

from claif_client import Client

BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


class _Nothing(asyncio.Protocol):
    RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(self.buf) < head_end + 4 + length:
                return
            self.buf = self.buf[head_end + 4 + length:]
            self.transport.write(self.RESPONSE)  # type: ignore[attr-defined]


@contextmanager
def nothing_server() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = loop.run_until_complete(loop.create_server(_Nothing, sock=sock))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


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
        with daemon(env) as sock, nothing_server() as floor_url, Client(sock) as c:
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
            samples = interleaved(rows)
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
                      "target": "<= 1.3" if name.startswith("front cache hit") else ""})
    print_table("HTTP front, one keep-alive client per column, interleaved rounds", table)
    added = (p50["front miss, 0 ms upstream (httpx)"] - p50["direct call to the simulator (httpx)"]) * 1e6
    print(f"a miss through the front adds {added:.0f} us over a direct call")
    print(msgspec.json.encode({"bench": "front", "rows": table, "miss_added_us": added}).decode())


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    time.sleep(0)
    main()
