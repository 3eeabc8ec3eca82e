"""`make demo`: a real daemon on a temporary socket, real requests through the
thin client, the daemon's status, then a clean shutdown.

Everything runs offline: the daemon is configured with the `echo` provider.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def _section(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="claif-demo-", dir="/tmp"))
    sock = tmp / "claifd.sock"
    env = dict(os.environ, HOME=str(tmp))
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

            _section("complete (plain)")
            r = client.complete("What does claifd do?", model="echo/demo")
            print(f"text:  {r.text}")
            print(f"model: {r.model}  cached: {r.cached}  usage: in={r.usage.input_tokens} out={r.usage.output_tokens}")

            _section("complete (streamed, word by word)")
            stream = client.stream("one pooled connection, one cache, durable sessions", model="echo/demo",
                                   extra={"delay_ms": 40})
            for delta in stream:
                print(f"[{delta}]", end="", flush=True)
            print()
            assert stream.response is not None
            print(f"final: {stream.response.text!r} stop_reason={stream.response.stop_reason}")

            _section("OpenAI-style facade")
            resp = client.chat.completions.create(model="echo/demo", messages=[{"role": "user", "content": "hi"}])
            print(f"choices[0].message.content = {resp.choices[0].message.content!r}")

            _section("daemon status")
            status = client.status()
            for key in ("version", "pid", "uptime_s", "requests_total", "upstream", "cache", "sessions", "config"):
                print(f"{key:>15}: {status[key]}")
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
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
