"""Long fault runs against the real daemon (`make stress`; not part of `make test`).

Six runs, each printing its figures:

1. malformed frames: 100,000 frames of every bad kind (invalid msgpack,
   invalid UTF-8, nesting 1000+, NaN and 70-bit numbers, unknown methods,
   wrong types; plus connection-killing ones: oversized lengths, garbage
   instead of a hello, frames cut off mid-way) from several connections,
   while a well-behaved client on its own connection must never fail;
2. 10,000 disconnects mid-stream (echo provider and the simulator over
   HTTP): tasks, file descriptors and RSS must come back to their baseline;
3. a client that pipelines requests and never reads: RSS must stay bounded
   while a bystander is served;
4. kill -9 under 10 concurrent session writers, 10 times: no acknowledged
   message lost, `PRAGMA integrity_check` ok every time;
5. single-flight while callers leave: 4,000 identical requests in rounds,
   half of them giving up at random moments; none that stays may fail;
6. the HTTP front's floods, from callers without the token and one that
   never reads: pipelined 64 KB POSTs, bodies left one byte short, a
   slowloris crowd, pipelined hits never read -- RSS peak and after close,
   every slow head cut at its deadline, a bystander served throughout.

    python tests/stress.py [--quick]     (--quick: a tenth of each count)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

from claif_client import ClaifError, Client  # noqa: E402
from claif_client.protocol import (  # noqa: E402
    Cancel,
    Complete,
    CompletionRequest,
    Error,
    Message,
    SessionGet,
    encode_frame,
)
from tests.conftest import RawConnection  # noqa: E402

# ------------------------------------------------------------------ helpers


class Daemon:
    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.socket = home / "run" / "d.sock"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAIF_", "ANTHROPIC_", "OPENAI_"))}
        self.env.update(HOME=str(home), PYTHONPATH=f"{ROOT}:{ROOT / 'client'}")
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        log = open(self.home / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "claifd", "--socket", str(self.socket), "--log-format", "json"],
            env=self.env, cwd=self.home, stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with Client(self.socket, timeout=2) as c:
                    c.ping()
                return self
            except ClaifError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / 1e6

    def status(self) -> dict[str, Any]:
        with Client(self.socket, timeout=10) as c:
            return c.status()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def Raw(path: Path, hello: bool = True) -> RawConnection:  # noqa: N802 - reads like the class it makes
    """A hand-driven connection, as in the tests (with a longer timeout: these runs load the daemon)."""
    return RawConnection(path, hello=hello, timeout=30)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def request(text: str, **extra: Any) -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)], **extra)


# ------------------------------------------------------- 1. malformed frames

ANSWERED = {
    "invalid msgpack": b"\xc1\xc1\xc1",
    "empty payload": b"",
    "invalid utf-8": b"\x82\xa4type\xa4p\xffng\xa2id\x07",
    "nesting 1000": b"\x82\xa4type\xa4ping\xa2id" + b"\x91" * 1000 + b"\x01",
    "nesting 50000": b"\x91" * 50_000 + b"\x01",
    "nan timeout": msgspec.msgpack.encode({"type": "complete", "id": 7, "request": {
        "messages": [{"role": "user", "content": "x"}], "timeout": float("nan")}}),
    "huge int": msgspec.msgpack.encode({"type": "complete", "id": 7, "request": {
        "messages": [{"role": "user", "content": "x"}], "max_tokens": 2**64 - 1}}),
    "unknown method": msgspec.msgpack.encode({"type": "teleport", "id": 7}),
    "wrong types": msgspec.msgpack.encode({"type": "complete", "id": 7, "request": {"messages": "nope"}}),
    "not a map": msgspec.msgpack.encode([1, 2, 3]),
    "negative limit": msgspec.msgpack.encode({"type": "session.list", "id": 7, "limit": -1}),
}
FATAL = {
    "oversized length": b"\xff\xff\xff\xff",
    "garbage hello": frame(os.urandom(40)),
    "cut mid-frame": (1000).to_bytes(4, "big") + b"x" * 100,
}


def malformed_frames(d: Daemon, total: int) -> dict[str, Any]:
    stop = threading.Event()
    good = {"ok": 0, "failed": 0, "worst_ms": 0.0}

    def well_behaved() -> None:
        with Client(d.socket, timeout=30) as c:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    if i % 2:
                        c.ping()
                    else:
                        assert c.complete(f"good {i % 50}", model="echo/x").text == f"echo: good {i % 50}"
                    good["ok"] += 1
                except Exception as exc:  # counted: the run's verdict
                    good["failed"] += 1
                    print("  well-behaved client failed:", type(exc).__name__, exc)
                good["worst_ms"] = max(good["worst_ms"], (time.perf_counter() - t0) * 1000)
                i += 1

    sent = {"answered": 0, "fatal": 0}
    wrong: list[str] = []

    def attacker(share: int) -> None:
        kinds = list(ANSWERED.items())
        conn = Raw(d.socket)
        batch = 200
        done = 0
        while done < share:
            n = min(batch, share - done)
            # One connection-killing frame per batch, on its own connection.
            fatal_kind = random.choice(list(FATAL))
            try:
                killer = Raw(d.socket, hello=fatal_kind != "garbage hello")
                killer.sock.sendall(FATAL[fatal_kind])
                if fatal_kind == "cut mid-frame":
                    killer.close()
                else:
                    try:
                        killer.read_payload()
                    except (EOFError, OSError):
                        pass
                    killer.close()
                sent["fatal"] += 1
            except OSError as exc:
                wrong.append(f"fatal {fatal_kind}: {exc}")
            chosen = [kinds[(done + j) % len(kinds)] for j in range(n - 1)]
            conn.sock.sendall(b"".join(frame(payload) for _, payload in chosen))
            for name, _ in chosen:
                reply = conn.read()
                if not isinstance(reply, Error) or reply.code not in ("bad_request", "unknown_method"):
                    wrong.append(f"{name}: {reply!r}")
            sent["answered"] += len(chosen)
            done += n
        conn.close()

    rss0 = d.rss_mb()
    bystander = threading.Thread(target=well_behaved)
    bystander.start()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=attacker, args=(total // 4,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    stop.set()
    bystander.join()
    return {"frames": sent["answered"] + sent["fatal"], "answered": sent["answered"], "fatal": sent["fatal"],
            "wrong": wrong, "seconds": elapsed, "good": good, "rss_growth_mb": d.rss_mb() - rss0}


# --------------------------------------------------- 2. disconnects mid-stream


def disconnects(d: Daemon, total: int, sim_url: str | None) -> dict[str, Any]:
    def settled() -> dict[str, Any]:
        time.sleep(1.0)
        s = d.status()
        return {"tasks": s["tasks"], "in_flight": s["in_flight"], "fds": psutil.Process(d.pid).num_fds(),
                "rss": d.rss_mb(), "connections": s["connections"]}

    # Warm up (imports, pools, caches of the allocator) before the baseline.
    _disconnect_round(d, 200, sim_url)
    before = settled()
    t0 = time.perf_counter()
    errors = _disconnect_round(d, total, sim_url)
    elapsed = time.perf_counter() - t0
    after = settled()
    for _ in range(10):  # the last cancellations land a moment later
        if after["tasks"] <= before["tasks"] and after["in_flight"] == 0:
            break
        after = settled()
    return {"disconnects": total, "seconds": elapsed, "errors": errors, "before": before, "after": after}


def _disconnect_round(d: Daemon, total: int, sim_url: str | None) -> list[str]:
    errors: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            model = "anthropic/stress" if sim_url and i % 2 else "echo/stress"
            words = " ".join(f"w{j}" for j in range(200))
            req = request(f"{i} {words}", model=model, extra={"delay_ms": 20} if model.startswith("echo") else None,
                          cache={"mode": "bypass"})
            try:
                conn = Raw(d.socket)
                conn.sock.sendall(encode_frame(Complete(id=1, request=req, stream=True)))
                reply = conn.read()
                if type(reply).__name__ != "Chunk":
                    errors.append(repr(reply))
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()  # mid-stream, abruptly
            except (OSError, EOFError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# ----------------------------------------------------- 3. never-reading client


def never_reads(d: Daemon, seconds: float) -> dict[str, Any]:
    # `session.get` of a session held in memory is answered inline (no task,
    # so no in-flight limit applies) with ~400 KB for 60 bytes asked.
    with Client(d.socket) as c:
        sid = c.session_create(title="big")["id"]
        c.session_send(sid, "x" * 200_000)
    rss0 = d.rss_mb()
    hog = Raw(d.socket)
    hog.sock.setblocking(False)
    payload = b"".join(bytes(encode_frame(SessionGet(id=i, session_id=sid))) for i in range(1, 1001))
    sent = 0
    peak = rss0
    worst_ms = 0.0
    served = 0
    deadline = time.monotonic() + seconds
    next_sample = 0.0
    with Client(d.socket, timeout=30) as bystander:
        while time.monotonic() < deadline:
            try:
                sent += hog.sock.send(payload)
            except BlockingIOError:
                time.sleep(0.005)
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + 0.5
                peak = max(peak, d.rss_mb())
                t0 = time.perf_counter()
                bystander.ping()
                worst_ms = max(worst_ms, (time.perf_counter() - t0) * 1000)
                served += 1
    hog.close()
    time.sleep(1)
    return {"seconds": seconds, "sent_mb": sent / 1e6, "asked_mb": sent / 60 * 0.4, "rss_before": rss0, "rss_peak": peak,
            "rss_after_close": d.rss_mb(), "bystander_pings": served, "bystander_worst_ms": worst_ms}


# ---------------------------------------------------- 6. the front's floods


def _front_flood(address: str, seconds: float, payload: bytes, conns: int) -> int:
    """`conns` threads, each reconnecting and writing `payload` until `seconds` pass; bytes written."""
    import socket as sk
    import threading

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    written = [0]

    def one() -> None:
        while time.monotonic() < deadline:
            try:
                with sk.create_connection((host, int(port)), timeout=5) as conn:
                    conn.sendall(payload)
                    written[0] += len(payload)
                    conn.recv(4096)
            except OSError:
                pass

    threads = [threading.Thread(target=one) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return written[0]


def front_floods(d: Daemon, seconds: float) -> dict[str, Any]:
    import socket as sk
    import threading

    with Client(d.socket) as c:
        c.config_set("server.http.enabled", True)
        c.config_set("server.http.listen", "127.0.0.1:0")
        c.config_set("server.http.header_timeout", 3)
        time.sleep(0.5)
        address = c.status()["http"]["listen"]
    token = (d.home / ".claif" / "http-token").read_text().strip()
    host, port = address.rsplit(":", 1)
    rss0 = d.rss_mb()
    peak = [rss0]
    worst = [0.0]
    done = threading.Event()

    def watch() -> None:
        with Client(d.socket, timeout=30) as bystander:
            while not done.is_set():
                peak[0] = max(peak[0], d.rss_mb())
                t0 = time.perf_counter()
                bystander.complete("bystander", model="echo/x")
                worst[0] = max(worst[0], (time.perf_counter() - t0) * 1000)
                time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    body = b'{"model":"echo/x","messages":[{"role":"user","content":"' + b"a" * 65_000 + b'"}]}'
    post = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body
    unauth = _front_flood(address, seconds, post * 20, 40)
    short = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\n"
             f"content-length: {16 * 1024 * 1024}\r\n\r\n").encode() + b"x" * (16 * 1024 * 1024 - 1)
    unauth += _front_flood(address, seconds / 2, short, 30)
    # A slowloris crowd: 500 heads at a byte a second.
    crowd = [sk.create_connection((host, int(port))) for _ in range(500)]
    started = time.monotonic()
    open_ = list(crowd)
    while open_ and time.monotonic() - started < 10:
        still = []
        for conn in open_:
            try:
                conn.send(b"P")
                still.append(conn)
            except OSError:
                pass
        open_ = still
        time.sleep(1)
    cut_after = time.monotonic() - started
    for conn in crowd:
        conn.close()
    # Pipelined hits, never read.
    hit = b'{"model":"echo/x","messages":[{"role":"user","content":"hit"}]}'
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n"
           f"content-type: application/json\r\ncontent-length: {len(hit)}\r\n\r\n").encode() + hit
    hog = sk.create_connection((host, int(port)))
    hog.settimeout(2)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            hog.sendall(req * 100)
            sent += len(req) * 100
        except (TimeoutError, OSError):
            break
    hog_rss = d.rss_mb()
    hog.close()
    done.set()
    watcher.join()
    time.sleep(2)
    return {"unauth_mb": unauth / 1e6, "rss_before": rss0, "rss_peak": peak[0], "rss_after": d.rss_mb(),
            "slow_open_after_10s": len(open_), "slow_cut_s": cut_after, "hog_sent_mb": sent / 1e6,
            "hog_rss": hog_rss, "bystander_worst_ms": worst[0]}


def report_front_floods(d: Daemon, scale: int) -> bool:
    seconds = 10 if scale == 1 else 3
    print(f"\n6. the HTTP front's floods ({seconds} s each)")
    f = front_floods(d, seconds)
    table([
        ("written by callers without the token", f"{f['unauth_mb']:,.0f} MB (pipelined 64 KB POSTs, 16 MiB bodies one byte short)"),
        ("daemon RSS", f"{f['rss_before']:.1f} MB before, peak {f['rss_peak']:.1f} MB "
                       f"({f['rss_peak'] - f['rss_before']:+.1f} MB), {f['rss_after']:.1f} MB after close"),
        ("slowloris (500 heads, 1 byte/s, header_timeout 3 s)",
         f"{f['slow_open_after_10s']} still open after {f['slow_cut_s']:.1f} s"),
        ("pipelined hits never read", f"{f['hog_sent_mb']:.1f} MB sent before the daemon stopped reading; "
                                      f"RSS {f['hog_rss']:.1f} MB then"),
        ("bystander", f"worst {f['bystander_worst_ms']:.1f} ms"),
    ])
    return bool(f["rss_peak"] - f["rss_before"] > 100 or f["rss_after"] - f["rss_before"] > 40
                or f["slow_open_after_10s"] > 0 or f["bystander_worst_ms"] > 2000)


# ------------------------------------------------- 4. kill -9 under writers


def kill_nine(home: Path, rounds: int, writers: int) -> dict[str, Any]:
    d = Daemon(home, {"CLAIF_CACHE__ENABLED": "false"})
    acked: dict[str, list[str]] = {}
    lost_total = 0
    integrity: list[str] = []
    acked_total = 0
    for r in range(rounds):
        d.start()
        stop = threading.Event()

        def writer(w: int, r: int = r) -> None:
            try:
                with Client(d.socket, timeout=30) as c:
                    sid = c.session_create(title=f"r{r}w{w}")["id"]
                    acked[sid] = []
                    i = 0
                    while not stop.is_set():
                        text = f"r{r} w{w} m{i}"
                        c.session_send(sid, text)
                        acked[sid].append(text)  # acknowledged: it must survive
                        i += 1
            except ClaifError:
                pass  # the daemon died under us: what was acknowledged counts

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.5, 2.0))
        d.kill()
        stop.set()
        for t in threads:
            t.join()
        db = sqlite3.connect(home / ".claif" / "sessions" / "sessions.sqlite3")
        integrity.append(db.execute("PRAGMA integrity_check").fetchone()[0])
        db.close()
    d.start()
    with Client(d.socket, timeout=60) as c:
        for sid, texts in acked.items():
            acked_total += len(texts)
            stored = [m["content"] for m in c.session_get(sid)["messages"] if m["role"] == "user"]
            lost_total += len([t for t in texts if t not in stored])
    d.stop()
    return {"rounds": rounds, "writers": writers, "acked": acked_total, "lost": lost_total,
            "integrity": sorted(set(integrity))}


# ------------------------------------------ 5. single-flight under departures


def flight_departures(d: Daemon, rounds: int, per_round: int) -> dict[str, Any]:
    """Identical requests arrive over 150 ms while half of them give up at
    random moments: every one that stays must get the answer, never "the
    upstream call was cancelled" (a newcomer must not join a flight whose
    last subscriber just left)."""
    import anyio

    from claif_client import AsyncClient

    outcome = {"stayed": 0, "ok": 0, "failed": 0, "left": 0, "errors": []}

    async def one(client: AsyncClient, prompt: str, leaves: bool) -> None:
        await anyio.sleep(random.uniform(0, 0.15))
        if leaves:
            with anyio.move_on_after(random.uniform(0, 0.1)):
                await client.complete(prompt, model="anthropic/stress")
            outcome["left"] += 1
            return
        outcome["stayed"] += 1
        try:
            await client.complete(prompt, model="anthropic/stress")
            outcome["ok"] += 1
        except ClaifError as exc:
            outcome["failed"] += 1
            outcome["errors"].append(f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        clients = [AsyncClient(d.socket, timeout=30) for _ in range(20)]
        try:
            for r in range(rounds):
                async with anyio.create_task_group() as tg:
                    for i in range(per_round):
                        tg.start_soon(one, clients[i % len(clients)], f"flight round {r}", i % 2 == 0)
        finally:
            for c in clients:
                await c.aclose()

    anyio.run(main)
    return outcome


def flight_handover(d: Daemon, rounds: int) -> dict[str, Any]:
    """The narrow case: the only caller cancels, and an identical request
    arrives a moment later (0-2 ms), while the abandoned flight is still
    landing. The newcomer must get its answer."""
    result = {"ok": 0, "failed": 0, "errors": []}
    for r in range(rounds):
        prompt = request(f"handover {r}", model="anthropic/stress")
        leaver, stayer = Raw(d.socket), Raw(d.socket)
        leaver.sock.sendall(encode_frame(Complete(id=1, request=prompt)))
        time.sleep(0.01)
        leaver.sock.sendall(encode_frame(Cancel(id=1)))
        pause = random.choice([0.0, 0.0, 0.0002, 0.0005, 0.001, 0.002])
        if pause:
            time.sleep(pause)
        stayer.sock.sendall(encode_frame(Complete(id=1, request=prompt)))
        reply = stayer.read()
        if type(reply).__name__ == "Done":
            result["ok"] += 1
        else:
            result["failed"] += 1
            result["errors"].append(repr(reply)[:120])
        leaver.read()
        leaver.close()
        stayer.close()
    return result


def report_flights(d: Daemon, scale: int, sim_url: str) -> bool:
    rounds = 20 if scale == 1 else 4
    print(f"\n5. single-flight while half the callers leave ({rounds} rounds x 200 identical requests)")
    _sim_post(sim_url, "/_sim/config", {"latency_ms": 60})
    before = _sim_stats(sim_url)["requests"]
    f = flight_departures(d, rounds, 200)
    calls = _sim_stats(sim_url)["requests"] - before
    _sim_post(sim_url, "/_sim/config", {"latency_ms": 30})
    h = flight_handover(d, 300 if scale == 1 else 50)
    _sim_post(sim_url, "/_sim/reset", {})
    table([
        ("callers that stayed", f"{f['stayed']:,}: {f['ok']:,} answered, {f['failed']} failed"
                                + (f" e.g. {f['errors'][:2]}" if f["errors"] else "")),
        ("callers that left", f"{f['left']:,}"),
        ("upstream calls", f"{calls} for {rounds} distinct questions (a flight abandoned by all is flown again)"),
        ("last caller leaves, twin arrives 0-2 ms later", f"{h['ok']} of {h['ok'] + h['failed']} twins answered"
                                                          + (f" e.g. {h['errors'][:2]}" if h["errors"] else "")),
    ])
    return bool(f["failed"] or h["failed"])


# ------------------------------------------------------------------ main


def report_malformed(d: Daemon, scale: int) -> bool:
    print(f"1. malformed frames ({100_000 // scale:,})")
    m = malformed_frames(d, 100_000 // scale)
    table([
        ("frames sent", f"{m['frames']:,} ({m['answered']:,} answered bad_request, "
                        f"{m['fatal']:,} closing their connection)"),
        ("rate", f"{m['frames'] / m['seconds']:,.0f} frames/s over {m['seconds']:.1f} s"),
        ("wrong answers", str(len(m["wrong"])) + (f" e.g. {m['wrong'][:3]}" if m["wrong"] else "")),
        ("well-behaved client", f"{m['good']['ok']:,} ok, {m['good']['failed']} failed, "
                                f"worst {m['good']['worst_ms']:.1f} ms"),
        ("daemon RSS growth", f"{m['rss_growth_mb']:+.1f} MB"),
    ])
    return bool(m["wrong"]) or m["good"]["failed"] > 0


def report_disconnects(d: Daemon, scale: int, sim_url: str) -> bool:
    print(f"\n2. disconnects mid-stream ({10_000 // scale:,}, half through the simulator over HTTP)")
    _sim_post(sim_url, "/_sim/config", {"token_delay_ms": 5})  # each stream lasts ~1 s upstream
    sim_before = _sim_stats(sim_url)
    r = disconnects(d, 10_000 // scale, sim_url)
    sim_after = _sim_stats(sim_url)
    _sim_post(sim_url, "/_sim/reset", {})
    b, a = r["before"], r["after"]
    table([
        ("rate", f"{r['disconnects'] / r['seconds']:,.0f} disconnects/s over {r['seconds']:.1f} s"),
        ("errors before the first chunk", str(len(r["errors"])) + (f" e.g. {r['errors'][:3]}" if r["errors"] else "")),
        ("upstream calls cut short", f"{sim_after['disconnects'] - sim_before['disconnects']:,} "
                                     "(the simulator saw the daemon hang up)"),
        ("event-loop tasks", f"{b['tasks']} before, {a['tasks']} after"),
        ("requests in flight", f"{b['in_flight']} before, {a['in_flight']} after"),
        ("open fds", f"{b['fds']} before, {a['fds']} after"),
        ("connections", f"{b['connections']} before, {a['connections']} after"),
        ("RSS", f"{b['rss']:.1f} MB before, {a['rss']:.1f} MB after ({a['rss'] - b['rss']:+.1f} MB)"),
    ])
    return bool(r["errors"]) or a["tasks"] > b["tasks"] or bool(a["in_flight"]) or a["fds"] > b["fds"] + 2


def report_never_reads(d: Daemon, scale: int) -> bool:
    seconds = 20 if scale == 1 else 5
    print(f"\n3. a client that pipelines requests and never reads ({seconds} s)")
    n = never_reads(d, seconds)
    table([
        ("requests written by the client", f"{n['sent_mb']:.2f} MB, asking for ~{n['asked_mb']:,.0f} MB of replies"),
        ("daemon RSS", f"{n['rss_before']:.1f} MB before, peak {n['rss_peak']:.1f} MB "
                       f"({n['rss_peak'] - n['rss_before']:+.1f} MB), {n['rss_after_close']:.1f} MB after close"),
        ("bystander", f"{n['bystander_pings']} pings, worst {n['bystander_worst_ms']:.1f} ms"),
    ])
    return bool(n["rss_peak"] - n["rss_before"] > 100)


def report_kill_nine(home: Path, scale: int) -> bool:
    rounds = 10 if scale == 1 else 3
    print(f"\n4. kill -9 under 10 concurrent session writers, {rounds} times")
    k = kill_nine(home, rounds, 10)
    table([
        ("acknowledged messages", f"{k['acked']:,}"),
        ("lost", str(k["lost"])),
        ("PRAGMA integrity_check", ", ".join(k["integrity"])),
    ])
    return bool(k["lost"] > 0 or k["integrity"] != ["ok"])


def _sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
        return msgspec.json.decode(resp.read())  # type: ignore[no-any-return]


def _sim_post(url: str, path: str, doc: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{url}{path}", data=msgspec.json.encode(doc), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tenth of each count")
    p.add_argument("--only", type=int, action="append", choices=[1, 2, 3, 4, 5, 6], help="run only run N (repeatable)")
    args = p.parse_args()
    runs = set(args.only or [1, 2, 3, 4, 5, 6])
    scale = 10 if args.quick else 1
    base = Path(tempfile.mkdtemp(prefix="clst", dir="/tmp"))
    sim = subprocess.Popen([sys.executable, "-m", "claif_sim", "--port", "0"], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'client'}"})
    assert sim.stdout is not None
    sim_url = sim.stdout.readline().strip().removeprefix("listening on ")
    failed = False
    try:
        if runs & {1, 2, 3, 5, 6}:
            env = {"CLAIF_PROVIDERS__ANTHROPIC__BASE_URL": sim_url, "ANTHROPIC_API_KEY": "sk-stress",
                   "CLAIF_SERVER__MAX_IN_FLIGHT_PER_CONNECTION": "64"}
            (base / "a").mkdir()
            d = Daemon(base / "a", env).start()
            if 1 in runs:
                failed |= report_malformed(d, scale)
            if 2 in runs:
                failed |= report_disconnects(d, scale, sim_url)
            if 3 in runs:
                failed |= report_never_reads(d, scale)
            if 5 in runs:
                failed |= report_flights(d, scale, sim_url)
            if 6 in runs:
                failed |= report_front_floods(d, scale)
            print(f"   (daemon exit code {d.stop()})")
        if 4 in runs:
            (base / "k").mkdir()
            failed |= report_kill_nine(base / "k", scale)
    finally:
        sim.terminate()
        sim.wait()
        shutil.rmtree(base, ignore_errors=True)
    print("\nstress:", "FAILED" if failed else "all promises held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
