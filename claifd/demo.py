"""`make demo`: the offline simulator (`claif-sim`) as the upstream, a real
daemon on a temporary socket pointed at it, real requests through the thin
client (Anthropic and OpenAI formats, plain, streamed, batched, one retried
after an injected 429, a cache hit, ten identical requests coalesced into one
upstream call), the daemon's status, then a clean shutdown.

Everything stays on this machine: the "API keys" are dummies that only the
simulator sees.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from claif_client import Client


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"claifd exited early with status {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("claifd did not start listening in time")


def httpx_get(url: str) -> object:
    import httpx

    return httpx.get(url).json()


def httpx_post(url: str, doc: object) -> None:
    import httpx

    httpx.post(url, json=doc).raise_for_status()


def _section(title: str) -> None:
    print(f"\n== {title}")


def _start_sim() -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [str(Path(sys.executable).with_name("claif-sim")), "--port", "0", "--latency-ms", "20", "--token-delay-ms", "30"],
        stdout=subprocess.PIPE, text=True,
    )
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"claif-sim did not start: {line!r}")
    return sim, line.removeprefix("listening on ")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="claif-demo-", dir="/tmp"))
    sock = tmp / "claifd.sock"
    sim, sim_url = _start_sim()
    print(f"claif-sim listening on {sim_url}")
    env = dict(
        os.environ,
        HOME=str(tmp),
        CLAIF_PROVIDERS__ANTHROPIC__BASE_URL=sim_url,
        CLAIF_PROVIDERS__OPENAI__BASE_URL=sim_url + "/v1",
        ANTHROPIC_API_KEY="sk-ant-demo-not-a-real-key",
        OPENAI_API_KEY="sk-demo-not-a-real-key",
        CLAIF_DEFAULT_MODEL="anthropic/claude-sonnet-4-5",
        CLAIF_RETRY__BASE_DELAY="0.05",
        CLAIF_POOL__PROXY="",  # the simulator is on loopback: never through a proxy of the environment
    )
    log = open(tmp / "claifd.log", "wb")
    claifd = Path(sys.executable).with_name("claifd")
    proc = subprocess.Popen([str(claifd), "--socket", str(sock), "--log-format", "json"], env=env, cwd=tmp, stderr=log)
    try:
        _wait_for(sock, proc)
        print(f"claifd started (pid {proc.pid}) on {sock}")
        with Client(sock) as client:
            _section("ping")
            t0 = time.perf_counter()
            client.ping()
            print(f"pong in {(time.perf_counter() - t0) * 1000:.2f} ms from claifd {client.daemon_version}")

            for model in ("anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"):
                _section(f"complete via HTTP: {model}")
                r = client.complete("What does claifd do?", model=model, max_tokens=200)
                print(f"text:  {r.text}")
                print(f"model: {r.model}  cached: {r.cached}  usage: in={r.usage.input_tokens} out={r.usage.output_tokens}")

            _section("streamed (anthropic SSE, token by token)")
            stream = client.stream("one pooled connection, one cache, durable sessions")
            for delta in stream:
                print(f"[{delta}]", end="", flush=True)
            print()
            assert stream.response is not None
            print(f"final: {stream.response.text!r} stop_reason={stream.response.stop_reason}")

            _section("an injected 429, retried by the daemon (honouring retry-after)")
            httpx_post(sim_url + "/_sim/config", {"errors": [429], "retry_after": 0.2})
            t0 = time.perf_counter()
            r = client.complete("Are you still there?", model="openai/gpt-4o-mini")
            print(f"{r.text!r} after {(time.perf_counter() - t0) * 1000:.0f} ms; "
                  f"daemon retries so far: {client.status()['upstream']['retries']}")

            _section("batch: 20 requests, 5 at a time, results in input order")
            requests = [{"messages": [{"role": "user", "content": f"question {i}"}], "model": "openai/gpt-4o-mini"}
                        for i in range(20)]
            t0 = time.perf_counter()
            items = client.batch(requests, concurrency=5)
            print(f"{len(items)} results in {(time.perf_counter() - t0) * 1000:.0f} ms; "
                  f"first: {items[0].response.text!r}, last: {items[-1].response.text!r}")  # type: ignore[union-attr]

            _section("the response cache: the same question twice")
            for attempt in ("first", "second"):
                t0 = time.perf_counter()
                r = client.complete("What is the capital of France?", model="anthropic/claude-sonnet-4-5")
                print(f"{attempt}: cached={r.cached!r} in {(time.perf_counter() - t0) * 1000:.2f} ms")

            _section("single-flight: 10 identical questions at once, one upstream call")
            before = httpx_get(sim_url + "/_sim/stats")["requests"]  # type: ignore[index]
            threads = [threading.Thread(target=lambda: Client(sock).complete("Coalesce us", model="openai/gpt-4o-mini"))
                       for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = httpx_get(sim_url + "/_sim/stats")["requests"]  # type: ignore[index]
            stats = client.cache_stats()
            print(f"upstream calls: {after - before}; coalesced so far: {stats['coalesced']}; "
                  f"saved so far: {stats['saved']}")

            _section("a conversation session (saved before each answer)")
            session = client.session_create(title="demo", model="anthropic/claude-sonnet-4-5")
            for line in ("My name is Ada.", "What is my name?"):
                reply, info = client.session_send(session["id"], line)
                print(f"you: {line}\n  -> {reply.text}  (message {info['message_index']}, "
                      f"{len(client.session_get(session['id'])['messages'])} messages in the session)")
            sent = httpx_get(sim_url + "/_sim/requests")[-1]["body"]["messages"]  # type: ignore[index]
            print(f"the second request carried the whole conversation: {len(sent)} messages")

            _section("live configuration: an edit to ~/.claif/config.json applies at once")
            config_file = tmp / ".claif" / "config.json"
            config_file.write_text('{"batch": {"concurrency": 12}}')
            deadline = time.monotonic() + 5
            while client.config_get("batch.concurrency")["value"] != 12 and time.monotonic() < deadline:
                time.sleep(0.01)
            print(f"batch.concurrency = {client.config_get('batch.concurrency')}")

            _section("OpenAI-style facade")
            resp = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            print(f"choices[0].message.content = {resp.choices[0].message.content!r}")

            _section("the offline echo provider")
            print(client.complete("no network needed", model="echo/demo").text)

            _section("daemon status")
            status = client.status()
            for key in ("version", "pid", "uptime_s", "requests_total", "upstream", "providers", "cache", "sessions", "config"):
                print(f"{key:>15}: {status[key]}")
            _section("the simulator saw")
            print(httpx_get(sim_url + "/_sim/stats"))
        _section("shutdown")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        print(f"claifd exited with status {code}; socket removed: {not sock.exists()}")
        return code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        sim.terminate()
        sim.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
