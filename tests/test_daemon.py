"""Daemon lifecycle: socket ownership, modes, signals, drain, restarts."""

from __future__ import annotations

import json
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from claif_client import Cancelled, ClaifError, Client, DaemonUnavailable

from .conftest import DaemonProcess, eventually, wait_connectable


def test_socket_and_directory_modes(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700
    st = daemon.socket.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_sigterm_exits_zero_and_removes_socket(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    assert d.stop() == 0
    assert not d.socket.exists()
    events = [line.get("event") for line in d.logs()]
    assert "draining" in events and "claifd stopped" in events


def test_sigint_also_drains(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    d.signal(signal.SIGINT)
    assert d.proc.wait(timeout=20) == 0
    assert not d.socket.exists()


def test_second_daemon_is_refused(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    first = daemon_factory()
    second = daemon_factory(start=False).start(wait=False)
    assert second.proc.wait(timeout=20) == 1
    assert any("already running" in str(line.get("error", "")) for line in second.logs())
    # The first one is unharmed.
    with Client(first.socket) as c:
        c.ping()
    assert first.stop() == 0


def test_stale_socket_is_replaced(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    d.socket.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(d.socket))  # bound, never listening: nobody answers
    stale.close()
    assert d.socket.exists()
    d.start()
    with Client(d.socket) as c:
        c.ping()
    assert any(line.get("event") == "removing stale socket" for line in d.logs())
    assert d.stop() == 0


def test_refuses_to_replace_a_regular_file(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    d.socket.parent.mkdir(mode=0o700)
    d.socket.write_text("precious")
    d.start(wait=False)
    assert d.proc.wait(timeout=20) == 1
    assert d.socket.read_text() == "precious"


def test_killed_daemon_leaves_a_socket_the_next_one_replaces(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    d.kill()  # SIGKILL: no cleanup at all
    assert d.socket.exists()
    d.start()
    with Client(d.socket) as c:
        c.ping()
    assert d.stop() == 0


def test_client_reconnects_after_restart(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    client = Client(d.socket, timeout=10)
    assert client.complete("before").text == "echo: before"
    first_pid = client.status()["pid"]
    assert d.stop() == 0
    with pytest.raises(DaemonUnavailable):
        client.ping()
    d.start()
    assert client.complete("after").text == "echo: after"
    assert client.status()["pid"] != first_pid
    client.close()
    assert d.stop() == 0


def _stream_in_background(d: DaemonProcess, words: str, delay_ms: int) -> tuple[threading.Thread, dict[str, Any]]:
    """A streamed echo request in a thread; the dict gets its chunks, its
    response or error, and the time its last frame arrived."""
    result: dict[str, Any] = {"chunks": []}

    def consume() -> None:
        with Client(d.socket, timeout=60) as c:
            stream = c.stream(words, extra={"delay_ms": delay_ms})
            try:
                for delta in stream:
                    result["chunks"].append(delta)
                result["response"] = stream.response
            except ClaifError as exc:
                result["error"] = exc
            result["ended"] = time.monotonic()

    t = threading.Thread(target=consume)
    t.start()
    assert eventually(lambda: result["chunks"], timeout=10), "stream did not start"
    return t, result


def _wait_log(d: DaemonProcess, event: str) -> None:
    assert eventually(lambda: any(line.get("event") == event for line in d.logs())), f"no {event!r} in the log"


def test_idle_daemon_exits_within_a_second_of_sigterm(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    with Client(d.socket) as c:
        c.ping()
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.0


def test_drain_lets_a_stream_in_flight_finish(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    words = " ".join(f"w{i}" for i in range(30))
    t, result = _stream_in_background(d, words, 30)
    d.signal(signal.SIGTERM)
    _wait_log(d, "draining")
    # New connections are refused while draining: the socket is gone.
    assert not d.socket.exists()
    with pytest.raises(DaemonUnavailable):
        Client(d.socket).ping()
    assert d.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
    exited = time.monotonic()
    t.join(timeout=10)
    assert "".join(result["chunks"]) == "echo: " + words
    assert result["response"].text == "echo: " + words
    # It exits as soon as its last request is done.
    assert exited - result["ended"] < 1.0


def test_drain_timeout_cancels_what_is_left(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SERVER__DRAIN_TIMEOUT": "0.3"})
    t, result = _stream_in_background(d, " ".join(["w"] * 1000), 50)
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
    assert time.monotonic() - started < 0.3 + 1.0
    t.join(timeout=10)
    assert isinstance(result.get("error"), (Cancelled, DaemonUnavailable)), result.get("error")
    assert len(result["chunks"]) < 1000
    assert any(line.get("event") == "drain timeout: cancelling requests in flight" for line in d.logs())


def test_second_signal_cuts_the_drain_short(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SERVER__DRAIN_TIMEOUT": "60"})
    t, result = _stream_in_background(d, " ".join(["w"] * 1000), 50)
    d.signal(signal.SIGTERM)
    _wait_log(d, "draining")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.0
    t.join(timeout=10)
    assert isinstance(result.get("error"), (Cancelled, DaemonUnavailable)), result.get("error")
    assert any(line.get("event") == "second stop signal: cancelling requests in flight" for line in d.logs())


def test_sighup_reloads_config(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # A project file in a directory made after start-up is not watched:
    # only SIGHUP can bring its edits in.
    d = daemon_factory(args=["--project-config", "later/p.json"])
    config = d.home / "later" / "p.json"
    with Client(d.socket) as c:
        generation = c.status()["config"]["generation"]
        config.parent.mkdir()
        config.write_text(json.dumps({"models": {"fast": "echo/two"}}))
        d.signal(signal.SIGHUP)
        assert eventually(lambda: c.status()["config"]["generation"] == generation + 1)
        assert c.complete("x", model="fast").model == "echo/two"
        config.write_text("{ broken")
        d.signal(signal.SIGHUP)
        assert eventually(lambda: c.status()["config"]["last_error"])
        status = c.status()
        assert "invalid JSON" in status["config"]["last_error"]
        assert status["config"]["generation"] == generation + 1
        assert c.complete("x", model="fast").model == "echo/two", "last good config keeps serving"
    assert d.stop() == 0


def test_invalid_config_at_startup_is_a_clear_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False, env={"CLAIF_POOL__MAX_CONNECTIONS": "lots"})
    d.start(wait=False)
    assert d.proc.wait(timeout=20) == 1
    errors = [line for line in d.logs() if line.get("event") == "invalid configuration"]
    assert errors and "max_connections" in str(errors[0]["error"])


def test_path_too_long(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(start=False)
    d.socket = short_tmp / ("x" * 60) / ("y" * 60) / "d.sock"
    d.start(wait=False)
    assert d.proc.wait(timeout=20) == 1
    assert any("too long" in str(line.get("error", "")) for line in d.logs())


def test_socket_from_environment(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """CLAIF_SOCKET is honoured by daemon and client alike."""
    d = daemon_factory(start=False)
    env_sock = short_tmp / "envsock" / "e.sock"
    d.env["CLAIF_SOCKET"] = str(env_sock)
    d.args = []
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "claifd"], env=d.env, cwd=d.home, stderr=subprocess.DEVNULL)
    try:
        wait_connectable(env_sock, proc)
        with Client(env_sock) as c:
            c.ping()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_private_directories_are_created_0700(daemon: DaemonProcess) -> None:
    for directory in (daemon.home / ".claif", daemon.home / ".claif" / "cache"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
