"""Hostile input, broken files and other users, through the real daemon:
nothing here may take the daemon down, and each case gets a clear answer."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from claif_client import (
    BadRequest,
    Client,
    DaemonUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    StorageError,
    UntrustedDaemon,
    UpstreamError,
)
from claif_client.protocol import (
    Chunk,
    Complete,
    CompletionRequest,
    Done,
    Error,
    Message,
    Ping,
    Pong,
    Result,
    SessionGet,
    encode_frame,
)

from .conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, DaemonProcess, RawConnection, Sim, eventually
from .test_config_live import global_file, save_by_rename, wait_error, wait_value

IS_ROOT = os.geteuid() == 0
NOBODY = 65534


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def stream_request(words: int = 200, delay_ms: int = 5) -> CompletionRequest:
    return CompletionRequest(
        messages=[Message(role="user", content=" ".join(["w"] * words))], extra={"delay_ms": delay_ms}
    )


# ------------------------------------------------------------ config files


def _bad_config_files(home: Path) -> dict[str, callable]:  # type: ignore[valid-type]
    def non_utf8(path: Path) -> None:
        path.write_bytes(b'{"batch": {"concurrency": 3}, "x": "\xff\xfe"}')

    def deep(path: Path) -> None:
        path.write_text("[" * 5000 + "]" * 5000)

    def deep_object(path: Path) -> None:
        path.write_text('{"a":' * 900 + "1" + "}" * 900)

    def dev_zero(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.symlink_to("/dev/zero")

    def fifo(path: Path) -> None:
        path.unlink(missing_ok=True)
        os.mkfifo(path)

    def huge(path: Path) -> None:
        tmp = path.with_name("big.tmp")
        with open(tmp, "w") as f:
            f.write('{"batch": {"concurrency": 3}, "pad": "')
            f.write("x" * (8 * 1024 * 1024))
            f.write('"}')
        os.replace(tmp, path)

    def nan(path: Path) -> None:
        path.write_text('{"cache": {"default_ttl": NaN}, "pool": {"max_connections": -5}}')

    return {"non_utf8": non_utf8, "deep": deep, "deep_object": deep_object, "dev_zero": dev_zero,
            "fifo": fifo, "huge": huge, "nan_and_negative": nan}


@pytest.mark.parametrize("kind", list(_bad_config_files(Path())))
def test_a_hostile_config_edit_never_takes_the_daemon_down(daemon: DaemonProcess, kind: str) -> None:
    path = global_file(daemon)
    with Client(daemon.socket) as c:
        save_by_rename(path, {"batch": {"concurrency": 4}})
        wait_value(c, "batch.concurrency", 4)
        started = time.monotonic()
        _bad_config_files(daemon.home)[kind](path)
        c.config_reload()  # whether or not the watcher saw it
        error = wait_error(c)
        assert time.monotonic() - started < 5, "reading a hostile file must not stall the daemon"
        assert "config.json" in error
        assert c.config_get("batch.concurrency")["value"] == 4
        t0 = time.perf_counter()
        c.ping()
        assert time.perf_counter() - t0 < 1
        path.unlink()
        save_by_rename(path, {"batch": {"concurrency": 6}})
        wait_value(c, "batch.concurrency", 6)
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize("kind", ["non_utf8", "deep", "dev_zero", "fifo", "nan_and_negative"])
def test_a_hostile_config_at_start_up_is_a_clear_refusal(daemon_factory, kind: str) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    path = global_file(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    _bad_config_files(d.home)[kind](path)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(timeout=20) == 1
    errors = [line for line in d.logs() if line.get("event") == "invalid configuration"]
    assert errors and "config.json" in str(errors[0]["error"]), d.logs()
    assert not any("Traceback" in str(line) for line in d.logs())


def test_config_validate_names_every_range_error(daemon: DaemonProcess, short_tmp: Path) -> None:
    with Client(daemon.socket) as c:
        doc = c.config_validate('{"pool": {"max_connections": -5}, "server": {"max_in_flight_per_connection": 0},'
                                ' "providers": {"openai": {"max_concurrency": 0}}}')
        assert not doc["ok"]
        for key in ("pool.max_connections", "server.max_in_flight_per_connection", "providers.openai.max_concurrency"):
            assert key in doc["error"]
        with pytest.raises(BadRequest, match="max_connections must be >= 1"):
            c.config_set("pool.max_connections", -5)
        with pytest.raises(BadRequest, match="finite"):
            c.config_set("cache.default_ttl", float("nan"))
        deep: object = 1
        for _ in range(500):
            deep = {"a": deep}
        with pytest.raises(BadRequest, match="nested deeper"):
            c.config_set("models", deep)
        assert c.config_get("pool.max_connections")["value"] == 100


def test_every_numeric_config_key_has_a_range() -> None:
    from claifd.config import RANGES, describe_schema

    numeric = [key for key, kind, _ in describe_schema() if kind in ("int", "float", "size", "duration")]
    for key in numeric:
        parts = key.split(".")
        assert key in RANGES or (len(parts) == 3 and f"{parts[0]}.*.{parts[2]}" in RANGES), key


def test_max_in_flight_of_one_still_serves(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SERVER__MAX_IN_FLIGHT_PER_CONNECTION": "1"})
    with Client(d.socket, timeout=5) as c:
        for i in range(20):
            assert c.complete(f"n{i}", cache="bypass").text == f"echo: n{i}"
    conn = RawConnection(d.socket, timeout=5)
    for i in range(1, 6):
        conn.send(Complete(id=i, request=CompletionRequest(messages=[Message(role="user", content=f"p{i}")])))
    ids = sorted(conn.read().id for _ in range(5))
    assert ids == [1, 2, 3, 4, 5]


# ------------------------------------------------------------ bad frames


BAD_PAYLOADS = {
    "invalid utf-8": b"\x82\xa4type\xa4p\xffng\xa2id\x07",
    "nesting 1000": b"\x82\xa4type\xa4ping\xa2id" + b"\x91" * 1000 + b"\x01",
    "nesting 100000": b"\x91" * 100_000 + b"\x01",
    # Deep inside a field typed Any, the decoder itself runs out of depth
    # (RecursionError, not a msgspec error, on every msgspec release).
    "nesting in tool_choice": msgspec.msgpack.encode(
        {"type": "complete", "id": 7, "request": {"messages": [{"role": "user", "content": "x"}],
                                                  "tool_choice": None}})[:-1] + b"\x91" * 100_000 + b"\x01",
    "nan timeout": msgspec.msgpack.encode(
        {"type": "complete", "id": 7, "request": {"messages": [{"role": "user", "content": "x"}],
                                                  "timeout": float("nan")}}),
    "infinite ttl": msgspec.msgpack.encode(
        {"type": "complete", "id": 7, "request": {"messages": [{"role": "user", "content": "x"}],
                                                  "cache": {"ttl": float("inf")}}}),
    "huge int": b"\x83\xa4type\xa8complete\xa2id\x07\xa7request\x82\xa8messages\x91\x82\xa4role\xa4user"
                b"\xa7content\xa1x\xaamax_tokens\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    "negative max_tokens": msgspec.msgpack.encode(
        {"type": "complete", "id": 7, "request": {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}}),
    "not msgpack": b"\xc1\xc1\xc1",
    "empty": b"",
}


def test_one_bad_frame_never_kills_a_multiplexed_connection(daemon: DaemonProcess) -> None:
    conn = RawConnection(daemon.socket)
    conn.send(Complete(id=1, request=stream_request(words=len(BAD_PAYLOADS) * 4 + 40, delay_ms=10), stream=True))
    assert isinstance(conn.read(), Chunk)
    for name, payload in BAD_PAYLOADS.items():
        conn.send_raw(frame(payload))
        while True:
            reply = conn.read()
            if isinstance(reply, Chunk):
                continue
            assert isinstance(reply, Error), (name, reply)
            assert reply.code == "bad_request", (name, reply)
            assert reply.id in (0, 7), (name, reply)
            break
        conn.send(Ping(id=100))
        while not isinstance(reply := conn.read(), Pong):
            assert isinstance(reply, Chunk), (name, reply)
    while not isinstance(reply := conn.read(), Done):
        assert isinstance(reply, Chunk)
    assert reply.id == 1


def test_the_client_refuses_values_msgpack_cannot_carry(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        with pytest.raises(BadRequest, match="cannot be encoded"):
            c.complete("hi", max_tokens=2**70)
        with pytest.raises(BadRequest, match="cannot be encoded"):
            c.complete("lone \ud800 surrogate")
        assert c.complete("fine").text == "echo: fine"


# ------------------------------------------------------- flow control


def _rss(d: DaemonProcess) -> int:
    assert d.proc is not None
    return psutil.Process(d.proc.pid).memory_info().rss


def test_a_client_that_never_reads_costs_bounded_memory(daemon: DaemonProcess) -> None:
    # `session.get` of a session in memory is answered inline (no task, so no
    # in-flight limit) with ~400 KB for 60 bytes asked: without write-side
    # flow control the daemon buffers gigabytes of replies for these requests.
    with Client(daemon.socket) as c:
        sid = c.session_create(title="big")["id"]
        c.session_send(sid, "x" * 200_000)
    base = _rss(daemon)
    hog = RawConnection(daemon.socket)
    requests = b"".join(bytes(encode_frame(SessionGet(id=i, session_id=sid))) for i in range(1, 50_001))
    hog.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 3
    while sent < len(requests) and time.monotonic() < deadline:
        try:
            sent += hog.sock.send(requests[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    grown = _rss(daemon) - base
    assert sent < len(requests), "the daemon kept reading from a client that reads nothing"
    assert grown < 64 * 1024 * 1024, f"RSS grew {grown / 1e6:.0f} MB after {sent / 1e6:.1f} MB of requests"
    with Client(daemon.socket) as c:
        c.ping()
        assert c.complete("a bystander").text == "echo: a bystander"
    # Once it reads, the replies arrive, in order.
    hog.sock.setblocking(True)
    hog.sock.settimeout(10)
    for i in range(1, 21):
        reply = hog.read()
        assert isinstance(reply, Result) and reply.id == i
    hog.close()


def test_a_stalled_partial_frame_and_a_silent_connection_are_closed(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SERVER__FRAME_TIMEOUT": "0.5"})
    partial = RawConnection(d.socket)
    partial.send_raw((1_000_000).to_bytes(4, "big") + b"x" * 1000)
    silent = RawConnection(d.socket, hello=False)
    busy = RawConnection(d.socket)  # slow but moving: kept
    t0 = time.monotonic()
    r = partial.read()
    assert isinstance(r, Error) and r.code == "timeout" and "frame_timeout" in r.message
    assert partial.is_closed_by_peer()
    assert time.monotonic() - t0 < 5
    assert silent.is_closed_by_peer(timeout=5)
    for i in range(8):
        busy.send(Ping(id=i))
        assert busy.read() == Pong(id=i)
        time.sleep(0.1)
    with Client(d.socket) as c:
        assert c.status()["requests_total"] >= 8


# ------------------------------------------------------- other users


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    victim = short_tmp / "victim.txt"
    victim.write_text("precious")
    d.socket.parent.mkdir(mode=0o700, exist_ok=True)
    d.socket.with_name(d.socket.name + ".lock").symlink_to(victim)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(timeout=8) == 1
    assert victim.read_text() == "precious"
    assert any("lock file" in str(line.get("error")) for line in d.logs())


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user (CI runs as root)")
def test_a_socket_directory_owned_by_another_user_is_refused(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    d.socket.parent.mkdir(mode=0o777)
    os.chown(d.socket.parent, NOBODY, NOBODY)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(timeout=8) == 1
    assert any("belongs to uid" in str(line.get("error")) for line in d.logs()), d.logs()


# Another user's `claif ping` (the sync client) or AsyncClient. "late" holds
# the Hello back until the daemon has answered and closed (poll sees the hang-up):
# the refusal is then waiting in the receive buffer and writing the Hello fails
# with EPIPE -- the race a real client loses now and then, every time.
_AS_NOBODY = """
import os, select, sys
import anyio, anyio._backends._asyncio
import claif_client._async_io, claif_client._sync_io
from claif_client import AsyncClient, ClaifError
from claif_client.cli import _build_parser, main
sock, timing, api = sys.argv[1:]
_build_parser().parse_args(["ping"])  # the stdlib is root's: what argparse imports late, now
os.setgid({uid}); os.setuid({uid})
if timing == "late":
    for module in (claif_client._sync_io, claif_client._async_io):
        def check_then_wait(raw, path, check=module.check_peer):
            check(raw, path)
            poller = select.poll()
            poller.register(raw, select.POLLRDHUP)
            assert poller.poll(10_000), "the daemon never closed"
        module.check_peer = check_then_wait
if api == "cli":
    sys.exit(main(["--socket", sock, "--timeout", "5", "ping"]))
async def ping():
    async with AsyncClient(sock, timeout=5) as c:
        await c.ping()
try:
    anyio.run(ping)
    print("ok")
except ClaifError as exc:
    print(f"claif: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
    sys.exit(1)
"""


def _ping_as_nobody(sock: Path, trusted: str | None, timing: str = "now", api: str = "cli") -> tuple[int, str]:
    """Exit code and what another user's ping printed."""
    env = {k: v for k, v in os.environ.items() if k != "CLAIF_TRUSTED_UIDS"}
    if trusted is not None:
        env["CLAIF_TRUSTED_UIDS"] = trusted
    out = subprocess.run([sys.executable, "-c", _AS_NOBODY.format(uid=NOBODY), str(sock), timing, api],
                         env=env, capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout.strip() + out.stderr.strip()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user (CI runs as root)")
def test_peer_credentials_are_checked_on_both_sides(daemon: DaemonProcess) -> None:
    # Open the file modes wide: only the uid checks stand in the way now.
    os.chmod(daemon.socket.parent.parent, 0o755)
    os.chmod(daemon.socket.parent, 0o755)
    os.chmod(daemon.socket, 0o666)
    # The client refuses a daemon of another user before sending anything...
    code, said = _ping_as_nobody(daemon.socket, None)
    assert (code, said.split(":")[:2]) == (3, ["claif", " UntrustedDaemon"]), said
    # ...and the daemon refuses a client of another user, who is told so
    # (exit 1), whether its Hello went out before the refusal came or after
    # the daemon had closed (writing it failed: the refusal is read anyway).
    tries = [(timing, api) for timing in ("now", "late") for api in ("cli", "async")]
    for timing, api in tries:
        code, said = _ping_as_nobody(daemon.socket, "0", timing, api)
        assert (code, said.split(":")[:2]) == (1, ["claif", " Forbidden"]), (timing, api, said)
    with Client(daemon.socket) as c:
        assert c.status()["connections"] >= 1
        c.config_set("server.allowed_uids", [NOBODY])
    for api in ("cli", "async"):
        code, said = _ping_as_nobody(daemon.socket, "0", "now", api)
        assert (code, said.split()[0]) == (0, "ok" if api == "async" else "pong"), (api, said)
    with Client(daemon.socket) as c:
        refused = 1 + len(tries)  # every try before allowed_uids (UntrustedDaemon's connection too)
        assert c.status()["connections_refused"] == refused
        assert f'claif_connections_closed_total{{reason="forbidden_uid"}} {refused}.0' in c.metrics()
    assert any(line.get("event") == "refused a connection from another user" for line in daemon.logs())


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user (CI runs as root)")
def test_the_client_refuses_a_fake_daemon_of_another_user(short_tmp: Path) -> None:
    theirs = short_tmp / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    os.chmod(short_tmp, 0o755)
    path = theirs / "fake.sock"
    fake = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, time
os.setgid({NOBODY}); os.setuid({NOBODY})
s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); os.chmod({str(path)!r}, 0o666); s.listen()
print("ready", flush=True)
c, _ = s.accept(); data = c.recv(65536); print("GOT", len(data), flush=True); time.sleep(5)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        with pytest.raises(UntrustedDaemon, match="uid 65534"):
            with Client(path, timeout=5) as c:
                c.ping()
        fake.kill()
        said = fake.communicate()[0] or ""
        assert "GOT" not in said or "GOT 0" in said, f"a prompt reached the fake daemon: {said}"
    finally:
        fake.kill()


def test_every_file_the_daemon_creates_is_private(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        sid = c.session_create(title="private")["id"]
        c.complete("secret words", session=sid)
        c.complete("cached words")
    time.sleep(0.3)  # the cache's write-behind
    files = [p for p in (daemon.home / ".claif").rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files), files
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
    sock_mode = stat.S_IMODE(daemon.socket.stat().st_mode)
    assert sock_mode == 0o600


_ = (json, socket, eventually, Forbidden)


# ------------------------------------------------------- broken files


def _cache_file(d: DaemonProcess) -> Path:
    return d.home / ".claif" / "cache" / "cache.sqlite3"


def _sessions_file(d: DaemonProcess) -> Path:
    return d.home / ".claif" / "sessions" / "sessions.sqlite3"


def _damage_pages(path: Path, first_page: int, pages: int, page_size: int = 4096) -> None:
    with open(path, "r+b") as f:
        f.seek(first_page * page_size)
        f.write(b"\xa5" * (pages * page_size))


def _health(c: Client, name: str) -> dict[str, str]:
    return next(check for check in c.health()["checks"] if check["name"] == name)


def test_a_cache_with_damaged_pages_is_moved_aside_and_serving_goes_on(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    with Client(d.socket) as c:
        for i in range(300):
            c.complete(f"question {i} " + "x" * 2000)
    assert d.stop() == 0
    size = _cache_file(d).stat().st_size
    assert size > 40 * 4096
    _damage_pages(_cache_file(d), 2, (size // 4096) - 4)
    d.start()
    with Client(d.socket) as c:
        cache = c.status()["cache"]
        assert cache["disk_tier"] == "ok"
        assert len(cache["quarantined"]) == 1 and "damaged" in cache["quarantined"][0]["path"]
        check = _health(c, "cache_disk")
        assert check["status"] == "warning" and "moved aside" in check["detail"]
        assert c.complete("fresh").cached is False
        assert c.complete("fresh").cached == "exact"
        assert 'claif_quarantined_files{store="cache"} 1.0' in c.metrics()
    assert Path(cache["quarantined"][0]["path"]).exists()
    assert any(line.get("event") == "damaged database moved aside" for line in d.logs())


def test_an_unusable_cache_directory_means_memory_only(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    not_a_dir = short_tmp / "file"
    not_a_dir.write_text("x")
    d = daemon_factory(env={"CLAIF_CACHE__DIR": str(not_a_dir)})
    with Client(d.socket) as c:
        assert c.status()["cache"]["disk_tier"] == "unavailable"
        assert _health(c, "cache_disk")["status"] == "warning"
        assert c.complete("mem").cached is False
        assert c.complete("mem").cached == "exact"


def test_a_sessions_file_that_is_garbage_is_moved_aside(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    _sessions_file(d).parent.mkdir(parents=True)
    _sessions_file(d).write_bytes(os.urandom(64 * 1024))
    d.start()
    with Client(d.socket) as c:
        sessions = c.status()["sessions"]
        assert sessions["store_error"] is None
        assert len(sessions["quarantined"]) == 1
        assert _health(c, "sessions")["status"] == "unhealthy"  # until acknowledged (claif session recover)
        sid = c.session_create(title="after")["id"]
        c.session_send(sid, "hello")
        assert c.session_list()["total"] == 1
    assert not any("Traceback" in str(line) for line in d.logs())


def test_damaged_session_pages_lose_only_the_damaged_sessions(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    ids = []
    with Client(d.socket) as c:
        for i in range(120):
            sid = c.session_create(title=f"s{i}")["id"]
            c.session_send(sid, f"message {i} " + "y" * 1500)
            ids.append(sid)
    assert d.stop() == 0
    path = _sessions_file(d)
    pages = path.stat().st_size // 4096
    assert pages > 40
    _damage_pages(path, pages // 2, 3)
    d.start()
    with Client(d.socket) as c:
        record = c.status()["sessions"]["quarantined"][0]
        assert record["salvaged"] > 60, record
        listing = c.session_list(limit=1000)
        assert listing["total"] == record["salvaged"]
        readable = 0
        for sid in ids:
            try:
                c.session_get(sid)
                readable += 1
            except NotFound:
                pass
        assert readable == record["salvaged"]
        assert _health(c, "sessions")["status"] == "unhealthy"  # until acknowledged (claif session recover)


def test_damaged_session_rows_fail_alone_and_listing_still_works(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    with Client(d.socket) as c:
        good = c.session_create(title="good")["id"]
        bad = c.session_create(title="bad")["id"]
        c.session_send(good, "fine")
        c.session_send(bad, "doomed")
    assert d.stop() == 0
    db = sqlite3.connect(_sessions_file(d))
    db.execute("UPDATE sessions SET title = CAST(x'ff41fe' AS TEXT) WHERE id = ?", (bad,))
    db.execute("UPDATE messages SET content = x'c1c1' WHERE session_id = ?", (bad,))
    db.commit()
    db.close()
    d.start()
    with Client(d.socket) as c:
        titles = {s["id"]: s["title"] for s in c.session_list()["sessions"]}
        assert titles[good] == "good" and "A" in titles[bad]
        assert c.session_get(good)["messages"]
        with pytest.raises(StorageError, match="damaged"):
            c.session_get(bad)
        assert _health(c, "sessions")["status"] == "warning"
        c.ping()


def test_a_garbage_wal_is_moved_aside_and_said_so(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    with Client(d.socket) as c:
        c.session_create(title="checkpointed")
    assert d.stop() == 0  # a clean stop checkpoints: the database holds it
    d.start()
    with Client(d.socket) as c:
        c.session_create(title="only in the WAL")
    d.kill()
    wal = Path(f"{_sessions_file(d)}-wal")
    assert wal.stat().st_size > 0
    wal.write_bytes(os.urandom(wal.stat().st_size))
    d.start()
    with Client(d.socket) as c:
        sessions = c.status()["sessions"]
        assert len(sessions["quarantined"]) == 1 and "WAL" in sessions["quarantined"][0]["reason"]
        assert [s["title"] for s in c.session_list()["sessions"]] == ["checkpointed"]
        assert _health(c, "sessions")["status"] == "unhealthy"  # until acknowledged (claif session recover)
    assert any(line.get("event") == "damaged database moved aside" for line in d.logs())


# ------------------------------------------------------- upstream answers


@pytest.mark.parametrize("kind", ["wrong_types", "bad_usage", "html", "not_json"])
def test_a_malformed_upstream_answer_is_an_error_and_never_cached(
    upstream_daemon: DaemonProcess, sim: Sim, kind: str
) -> None:
    with Client(upstream_daemon.socket) as c:
        for model in ("anthropic/m", "openai/m"):
            sim.configure(malformed=kind)
            for _ in range(2):  # the second would be a hit if the first were cached
                with pytest.raises(UpstreamError, match="shape|not JSON"):
                    c.complete(f"{kind} question", model=model)
            sim.configure(malformed=None)
            answer = c.complete(f"{kind} question", model=model)
            assert answer.cached is False and answer.text
            assert c.complete(f"{kind} question", model=model).cached == "exact"
        assert c.cache_stats()["stores"] == 2


def test_empty_and_huge_answers_are_served_but_not_stored(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket, timeout=60) as c:
        sim.configure(malformed="empty")
        assert c.complete("say nothing", model="openai/m").text == ""
        sim.configure(malformed="huge")
        with pytest.raises(BadRequest, match="frame limit"):
            c.complete("say a lot", model="anthropic/m")
        sim.configure(malformed=None)
        assert c.complete("say nothing", model="openai/m").cached is False
        stats = c.cache_stats()
        assert stats["not_stored"] == {"empty": 1, "too_large": 1}
        assert stats["stores"] == 1
        c.ping()


@pytest.mark.parametrize("echo", ["whole", "masked", "cut"])
def test_no_piece_of_a_key_leaks_through_an_upstream_error(upstream_daemon: DaemonProcess, sim: Sim, echo: str) -> None:
    with Client(upstream_daemon.socket) as c:
        messages = []
        for model in ("anthropic/m", "openai/m"):
            sim.configure(errors=[401], key_echo=echo)
            with pytest.raises(UpstreamError) as info:
                c.complete("x", model=model)
            messages.append(info.value.message)
    for key in (ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY):
        pieces = {key[i:i + 6] for i in range(len(key) - 5)}
        for message in messages:
            assert "[redacted]" in message, message
            assert not any(piece in message for piece in pieces), message


def test_the_simulator_survives_a_peer_that_closes_mid_body(sim: Sim) -> None:
    host, port = sim.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"partial")
    assert sim.stats()["requests"] == 0
    assert sim.proc.poll() is None


# ------------------------------------------------------- smaller ones


def test_a_batch_whose_results_exceed_a_frame_loses_nothing(daemon: DaemonProcess) -> None:
    # 10 MB of requests; their answers (text and content blocks) are ~20 MB,
    # over the 16 MiB frame limit: once discarded whole as too_large.
    prompts = [f"{i} " + "z" * 50_000 for i in range(200)]
    with Client(daemon.socket, timeout=120) as c:
        items = c.batch([{"messages": [{"role": "user", "content": p}]} for p in prompts], concurrency=20)
        assert [item.index for item in items] == list(range(200))
        assert all(item.response is not None and item.response.text == f"echo: {p}" for item, p in zip(items, prompts))
        c.ping()


def test_a_batch_larger_than_a_frame_is_sent_in_parts_and_returns_its_memory(daemon: DaemonProcess) -> None:
    import psutil

    # 40 MB of requests: more than two frames' worth. Once a broken pipe
    # (the daemon closed the connection on the oversized frame).
    prompts = [f"{i} " + "p" * 4000 for i in range(10_000)]
    progress: list[dict[str, int]] = []
    with Client(daemon.socket, timeout=300) as c:
        pid = c.status()["pid"]
        before = psutil.Process(pid).memory_info().rss
        items = c.batch([{"prompt": p, "model": "echo/x", "cache": "bypass"} for p in prompts], concurrency=50,
                        on_progress=progress.append)
        assert [item.index for item in items] == list(range(10_000))
        assert all(item.response is not None and item.response.text == f"echo: {p}" for item, p in zip(items, prompts))
        assert progress[-1]["done"] == progress[-1]["total"] == 10_000
        assert sorted(p["index"] for p in progress) == list(range(10_000))
        # Handed back once the batch and the request log's writing of it are done (within seconds).
        deadline = time.monotonic() + 15
        while True:
            time.sleep(0.5)
            grown = psutil.Process(pid).memory_info().rss - before
            if grown < 50 * 1024 * 1024 or time.monotonic() > deadline:
                break
        assert grown < 50 * 1024 * 1024, f"{grown / 1e6:.0f} MB kept after the batch"
        with pytest.raises(InvalidRequest, match="request 1 is .* over the"):
            c.batch([{"prompt": "small"}, {"prompt": "x" * (17 * 1024 * 1024)}])
        c.ping()


def test_running_out_of_file_descriptors_is_logged_and_survived(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    import resource

    d = daemon_factory(start=False)
    d.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    d.start()
    crowd = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(str(d.socket))
        except OSError:
            s.close()
            break
        crowd.append(s)
    assert eventually(lambda: any(line.get("event", "").startswith("running out of file descriptors")
                                  for line in d.logs()), timeout=10)
    for s in crowd:
        s.close()

    def serves() -> bool:
        try:
            with Client(d.socket, timeout=2) as c:
                return c.status()["open_fds"] > 0
        except DaemonUnavailable:  # the daemon is still closing the crowd
            return False

    assert eventually(serves, timeout=10)


def test_the_cli_refuses_deep_json_with_a_usage_error(daemon: DaemonProcess, short_tmp: Path) -> None:
    from .test_cli import claif

    deep = short_tmp / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    binary = short_tmp / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for args in (["session", "import", str(deep)], ["batch", str(deep)], ["config", "validate", str(binary)],
                 ["batch", str(binary)]):
        out = claif(*args, socket=daemon.socket)
        assert out.returncode == 2, (args, out)
        assert "Traceback" not in out.stderr and out.stderr.startswith("claif: "), (args, out.stderr)


def test_redaction_catches_any_piece_of_a_key() -> None:
    from claifd.redaction import redact_secrets

    key = "sk-proj-Q7aVb3XyZ9wErT5uIoP1aSdF"
    for leak in (key, key[:20], key[9:], f"{key[:12]}****{key[-4:]}", f"xx{key[10:22]}yy", key[3:14]):
        text = redact_secrets(f"Incorrect API key provided: {leak}. See the docs.", [key])
        assert leak not in text and "[redacted]" in text, (leak, text)
        assert "See the docs." in text
    assert redact_secrets("model claude-3-5-sonnet-20241022 is overloaded", [key]) == \
        "model claude-3-5-sonnet-20241022 is overloaded"


def test_a_twin_arriving_as_the_last_caller_leaves_gets_its_answer(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    # The only caller cancels; an identical request arrives 0-2 ms later,
    # while the abandoned flight is still landing. Before the fix about half
    # of these twins got "the upstream call was cancelled".
    from claif_client.protocol import Cancel

    sim.configure(latency_ms=30)
    for r in range(30):
        prompt = CompletionRequest(messages=[Message(role="user", content=f"twin {r}")], model="anthropic/m")
        leaver, twin = RawConnection(upstream_daemon.socket), RawConnection(upstream_daemon.socket)
        leaver.send(Complete(id=1, request=prompt))
        time.sleep(0.01)
        leaver.send(Cancel(id=1))
        time.sleep((0.0, 0.0005, 0.001, 0.002)[r % 4])
        twin.send(Complete(id=1, request=prompt))
        reply = twin.read()
        assert isinstance(reply, Done), (r, reply)
        leaver.close()
        twin.close()
