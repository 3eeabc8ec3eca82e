"""Provider prompt caching placed by the daemon (issue 33), against claif-sim.

A 20-turn agent loop -- a 3,000-token system prompt, three tools, each turn
a tool call answered by its result -- runs through the real daemon to the
simulator (which models Anthropic's prompt cache: marked prefixes written,
then read) twice in the same run: `optimizer.prompt_cache` on, then off
(the baseline). The response cache is bypassed: every turn is a paid call.
Each turn's usage is priced at claude-sonnet-4-5's list prices (input $3,
cache write $3.75, cache read $0.30 per million tokens): the table gives
the input dollars of the loop with and without automatic breakpoints, and
their ratio.

Then the optimizer's own cost: `PromptCache.place` on each of the loop's 20
requests (a fresh memory each pass), per request, against encoding the same
request as JSON (what the provider does with it anyway), measured in the
same run. Target: under 50 us a request.
"""

from __future__ import annotations

import os
import statistics
import time

import msgspec
from _common import daemon, print_table, start_sim

from claif_client import Client
from claif_client.protocol import CacheControl, CompletionRequest, Message
from claifd.cache.prices import DEFAULT_PRICES
from claifd.prompt_cache import PromptCache

TURNS = int(os.environ.get("BENCH_TURNS", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))
MODEL = "anthropic/claude-sonnet-4-5"
SYSTEM = "You are a careful coding agent. " + " ".join(f"guideline{i:04d}" for i in range(3000))
TOOLS = [
    {"name": name, "description": f"{name}: " + " ".join(f"detail{i:03d}" for i in range(100)),
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
    for name in ("read_file", "write_file", "run_tests")
]


def agent_loop(client: Client, tag: str) -> list[tuple[CompletionRequest, dict[str, int]]]:
    """TURNS requests, each the whole conversation so far (a tool call is
    answered by its result, a text answer by the next instruction); the
    request and its usage, each."""
    messages = [Message(role="user", content=f"[{tag}] fix the failing test in the repo")]
    out = []
    for turn in range(TURNS):
        request = CompletionRequest(messages=list(messages), model=MODEL, system=SYSTEM, tools=TOOLS, max_tokens=256,
                                    cache=CacheControl(mode="bypass"))
        reply = client.complete_request(request)
        out.append((request, msgspec.to_builtins(reply.usage)))
        call = next((b for b in reply.content if b.get("type") == "tool_use"), None)
        if call is not None:
            messages.append(Message(role="assistant", content=reply.content))
            messages.append(Message(role="user", content=[{
                "type": "tool_result", "tool_use_id": call["id"],
                "content": f"[{tag}] output of step {turn}: " + "ok " * 40}]))
        else:
            messages.append(Message(role="assistant", content=reply.text))
            messages.append(Message(role="user", content=f"[{tag}] now step {turn + 1}: read the next file"))
    return out


def input_usd(usages: list[dict[str, int]]) -> tuple[float, int, int, int]:
    price = DEFAULT_PRICES[MODEL]
    fresh = sum(u["input_tokens"] for u in usages)
    write = sum(u["cache_creation_input_tokens"] for u in usages)
    read = sum(u["cache_read_input_tokens"] for u in usages)
    usd = (fresh * price.input + write * price.cache_write + read * price.cache_read) / 1e6
    return usd, fresh, write, read


def main() -> None:
    sim, url = start_sim()
    try:
        env = {"CLAIF_PROVIDERS__ANTHROPIC__BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-bench"}
        rows = []
        loops = {}
        for placed in (True, False):
            with daemon(dict(env, CLAIF_OPTIMIZER__PROMPT_CACHE=str(placed).lower())) as sock, Client(sock) as c:
                loops[placed] = agent_loop(c, "on" if placed else "off")
            usd, fresh, write, read = input_usd([u for _, u in loops[placed]])
            rows.append({"breakpoints": "automatic" if placed else "none (baseline)", "turns": TURNS,
                         "input_tokens": fresh, "cache_write": write, "cache_read": read, "input_usd": f"{usd:.4f}",
                         "usd": usd})
        rows[0]["ratio"] = rows[0]["usd"] / rows[1]["usd"]  # type: ignore[operator]
        rows[1]["ratio"] = 1.0
        for row in rows:
            del row["usd"]
        print_table(f"{TURNS}-turn agent loop, 3,000-token system prompt and 3 tools, {MODEL} list prices", rows)

        requests = [r for r, _ in loops[True]]
        place, encode = [], []
        for _ in range(ROUNDS):
            cache = PromptCache()
            t0 = time.perf_counter()
            for request in requests:
                cache.place(request, "claude-sonnet-4-5")
            t1 = time.perf_counter()
            for request in requests:
                msgspec.json.encode(request)
            t2 = time.perf_counter()
            place.append((t1 - t0) / len(requests))
            encode.append((t2 - t1) / len(requests))
        p, e = statistics.median(place), statistics.median(encode)
        print_table("the optimizer's time per request (PromptCache.place, median of rounds)", [
            {"step": "place breakpoints", "us_per_request": p * 1e6, "ratio": p / e, "target": "< 50 us"},
            {"step": "encode the request as JSON (baseline)", "us_per_request": e * 1e6, "ratio": 1.0},
        ])
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
