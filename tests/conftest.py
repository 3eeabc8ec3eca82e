"""Fixtures: a real claifd process on a real Unix socket, and raw connections.

Sockets live in short directories under /tmp because AF_UNIX paths are limited
to about 107 bytes and pytest's tmp_path can be longer than that.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from claif_client.framing import FrameDecoder
from claif_client.protocol import PROTOCOL_VERSION, Hello, Reply, encode_frame, hello_decoder, reply_decoder

STARTUP_TIMEOUT = 15.0


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="clt", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_connectable(path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = STARTUP_TIMEOUT) -> None:
    """Until the daemon answers a handshake: its socket accepts (and queues)
    connections before the stores are open, so a connect alone proves little."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited early with {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.connect(str(path))
                s.sendall(encode_frame(Hello(protocol=PROTOCOL_VERSION, client="test-wait")))
                if s.recv(65536):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"daemon did not answer on {path}")


@dataclass
class DaemonProcess:
    """A claifd subprocess. `logs()` reads what it wrote to stderr so far."""

    home: Path
    socket: Path
    log_path: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    # Run in the child before exec (e.g. a resource limit for a fault test).
    preexec: Callable[[], None] | None = None

    def start(self, wait: bool = True) -> DaemonProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "claifd", "--socket", str(self.socket), "--log-format", "json", *self.args],
            env=self.env, cwd=self.home, stdout=log, stderr=log, preexec_fn=self.preexec,
        )
        log.close()
        if wait:
            wait_connectable(self.socket, self.proc)
            # The factory gives one test's daemons one socket path: make sure
            # the one answering is this one, not an earlier one still running.
            from claif_client import Client

            with Client(self.socket, timeout=10) as c:
                pid = c.status()["pid"]
            if pid != self.proc.pid:
                raise RuntimeError(f"another daemon (pid {pid}) answers on {self.socket}: stop it first")
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def logs(self) -> list[dict[str, object]]:
        lines = self.log_path.read_bytes().splitlines()
        out = []
        for line in lines:
            try:
                out.append(msgspec.json.decode(line))
            except msgspec.DecodeError:
                out.append({"event": line.decode(errors="replace"), "raw": True})
        return out


# A proxy in the environment of whoever runs the tests would carry the tests'
# loopback calls (the daemon honours these, loopback included): the tests that
# are about proxies set their own.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def daemon_factory(short_tmp: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[DaemonProcess] = []

    def make(env: dict[str, str] | None = None, args: list[str] | None = None, start: bool = True) -> DaemonProcess:
        home = short_tmp / f"h{len(started)}"
        home.mkdir()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAIF_", "ANTHROPIC_", "OPENAI_"))}
        base_env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        base_env.update(env or {})
        d = DaemonProcess(
            home=home, socket=short_tmp / "run" / "d.sock", log_path=home / "daemon.log",
            env=base_env, args=list(args or []),
        )
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def daemon(daemon_factory) -> Iterator[DaemonProcess]:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    yield d
    assert d.stop() == 0, "daemon did not exit cleanly"


class RawConnection:
    """A hand-driven protocol connection, for sending exactly the bytes a test wants."""

    def __init__(self, path: Path, hello: bool = True, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.frames = FrameDecoder()
        self.decoder = reply_decoder()
        self.pending: list[bytes | memoryview] = []
        if hello:
            self.send(Hello(protocol=PROTOCOL_VERSION, client="test"))
            welcome = hello_decoder().decode(self.read_payload())
            assert type(welcome).__name__ == "Welcome", welcome

    def send(self, msg: msgspec.Struct) -> None:
        self.sock.sendall(encode_frame(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_payload(self) -> bytes | memoryview:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed by the daemon")
            self.pending.extend(self.frames.feed(data))
        return self.pending.pop(0)

    def read(self) -> Reply:
        return self.decoder.decode(self.read_payload())

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(daemon: DaemonProcess) -> Iterator[RawConnection]:
    conn = RawConnection(daemon.socket)
    yield conn
    conn.close()


# ----------------------------------------------------------------- simulator


class Sim:
    """A running `claif-sim`, with helpers for its control endpoints."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        import httpx

        self.proc = proc
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def stats(self) -> dict[str, object]:
        return self.http.get("/_sim/stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def configure(self, **faults: object) -> None:
        self.http.post("/_sim/config", json=faults).raise_for_status()

    def requests(self) -> list[dict[str, object]]:
        return self.http.get("/_sim/requests").json()  # type: ignore[no-any-return]

    def wait_for(self, predicate, timeout: float = 5.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)


def start_sim(*args: str) -> Sim:
    proc = subprocess.Popen(
        [sys.executable, "-m", "claif_sim", "--port", "0", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on http://"), line
    return Sim(proc, line.removeprefix("listening on "))


def running_sim() -> Iterator[Sim]:
    """A simulator for the fixture's scope, stopped after it."""
    sim = start_sim()
    yield sim
    sim.http.close()
    sim.proc.terminate()
    sim.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sim_process() -> Iterator[Sim]:
    yield from running_sim()


@pytest.fixture
def sim(sim_process: Sim) -> Sim:
    """The shared simulator, counters zeroed and faults cleared for this test."""
    sim_process.reset()
    return sim_process


# Distinctive so a test can search logs and replies for any trace of it.
ANTHROPIC_TEST_KEY = "sk-ant-test-7f3a9c2e-SECRET"
OPENAI_TEST_KEY = "sk-test-41d8b6e0-SECRET"


def sim_env(sim: Sim, **extra: str) -> dict[str, str]:
    env = {
        "CLAIF_PROVIDERS__ANTHROPIC__BASE_URL": sim.url,
        "CLAIF_PROVIDERS__OPENAI__BASE_URL": sim.url + "/v1",
        "ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY,
        "OPENAI_API_KEY": OPENAI_TEST_KEY,
        # Retries without waiting: the tests are about what is retried.
        "CLAIF_RETRY__BASE_DELAY": "0.01",
        "CLAIF_RETRY__MAX_DELAY": "0.05",
    }
    env.update(extra)
    return env


@pytest.fixture
def upstream_daemon(daemon_factory, sim: Sim) -> Iterator[DaemonProcess]:  # type: ignore[no-untyped-def]
    """A daemon whose anthropic and openai providers point at the simulator."""
    d = daemon_factory(env=sim_env(sim), args=["--log-level", "debug"])
    yield d
    assert d.stop() == 0


def eventually(check, timeout: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """`check()`'s value once it is truthy (or its last value after `timeout`):
    for effects that land a moment after the reply that caused them."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
