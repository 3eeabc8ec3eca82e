"""Running under systemd: the units as `install-user-units` writes them
(checked by `systemd-analyze`), socket activation through the real
`systemd-socket-activate`, sd_notify datagrams, journald priorities, and a
clean, quick exit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claif_client import Client

from .conftest import DaemonProcess, eventually

ANALYZE = shutil.which("systemd-analyze")
ACTIVATE = shutil.which("systemd-socket-activate")
# As root (CI), `make test` installs systemd's tools with apt: their absence
# is then a failure, not a skip. Only another user without them skips.
IS_ROOT = os.geteuid() == 0
needs_analyze = pytest.mark.skipif(ANALYZE is None and not IS_ROOT,
                                   reason="systemd-analyze is not installed (make test installs it with apt as root)")
CLAIFD = str(Path(sys.executable).with_name("claifd"))


def install_units(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "claifd", "install-user-units", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def analyze(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "systemd-analyze is missing: `make test` installs it (apt) when run as root"
    runtime = home / "run"
    runtime.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, env=env, timeout=120)


@needs_analyze
def test_the_written_units_verify(short_tmp: Path) -> None:
    out = install_units(short_tmp, "--exec-start", CLAIFD)
    assert out.returncode == 0, out.stderr
    units = short_tmp / ".config" / "systemd" / "user"
    result = analyze("verify", "--user", str(units / "claifd.socket"), str(units / "claifd.service"), home=short_tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    env_file = short_tmp / ".config" / "claif" / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert (short_tmp / ".claif").is_dir()
    assert "systemctl --user enable --now claifd.socket" in out.stdout


@needs_analyze
def test_verify_fails_when_exec_start_does_not_exist(short_tmp: Path) -> None:
    assert install_units(short_tmp, "--exec-start", str(short_tmp / "nowhere" / "claifd")).returncode == 0
    units = short_tmp / ".config" / "systemd" / "user"
    result = analyze("verify", "--user", str(units / "claifd.service"), home=short_tmp)
    assert result.returncode != 0 and "not executable" in result.stdout + result.stderr


@needs_analyze
def test_the_service_is_hardened(short_tmp: Path) -> None:
    assert install_units(short_tmp, "--exec-start", CLAIFD).returncode == 0
    unit = short_tmp / ".config" / "systemd" / "user" / "claifd.service"
    result = analyze("security", "--offline=yes", str(unit), home=short_tmp)
    match = re.search(r"Overall exposure level for claifd\.service: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


def test_units_name_a_stable_installation(short_tmp: Path) -> None:
    # From a source checkout, ExecStart is a venv of its own, not the checkout's .venv.
    out = install_units(short_tmp, "--dry-run")
    assert out.returncode == 0
    exec_line = next(line for line in out.stdout.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith(f"ExecStart={short_tmp}/.local/share/claifd/venv/bin/claifd")
    assert "would create" in out.stdout and "install" in out.stdout
    assert "ExecReload=" in out.stdout and "config reload" in out.stdout
    assert not (short_tmp / ".config").exists()


def test_checked_in_units_match_the_generator() -> None:
    from claifd.units import REFERENCE_BIN, render_service, render_socket

    root = Path(__file__).resolve().parent.parent
    assert (root / "systemd" / "claifd.service").read_text() == render_service(REFERENCE_BIN)
    assert (root / "systemd" / "claifd.socket").read_text() == render_socket()


@pytest.mark.skipif(ACTIVATE is None and not IS_ROOT,
                    reason="systemd-socket-activate is not installed (make test installs it with apt as root)")
def test_socket_activation(short_tmp: Path) -> None:
    assert ACTIVATE is not None, "systemd-socket-activate is missing: `make test` installs it (apt) when run as root"
    path = short_tmp / "act.sock"
    home = short_tmp / "home"
    home.mkdir()
    passed = ["HOME=" + str(home), "PATH=" + os.environ.get("PATH", ""), "PYTHONUNBUFFERED=1"]
    if os.environ.get("PYTHONPATH"):
        passed.append("PYTHONPATH=" + os.environ["PYTHONPATH"])
    log = open(short_tmp / "daemon.log", "wb")
    proc = subprocess.Popen([ACTIVATE, "-l", str(path), *[f"-E{v}" for v in passed], CLAIFD, "--log-format", "json"],
                            stdout=log, stderr=log, env={k: v for k, v in os.environ.items()
                                                         if not k.startswith("CLAIF_")})
    try:
        assert eventually(path.exists, timeout=10)
        with Client(path, timeout=10) as c:  # the first connection starts the daemon
            c.ping()
            status = c.status()
        assert status["socket"] == str(path) and status["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert path.exists(), "an activated socket belongs to systemd: never unlinked"
        assert not path.with_name("act.sock.lock").exists()
        assert b'"activated": true' in (short_tmp / "daemon.log").read_bytes()
    finally:
        proc.kill()
        log.close()


def _listen_notify(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def _collect(s: socket.socket, until: float) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_sd_notify_ready_status_watchdog_reload_stopping(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    notify = _listen_notify(short_tmp / "notify.sock")
    d: DaemonProcess = daemon_factory(env={"NOTIFY_SOCKET": str(short_tmp / "notify.sock"),
                                           "WATCHDOG_USEC": "200000"})
    early = _collect(notify, time.monotonic() + 1.0)
    ready = [m for m in early if "READY=1" in m]
    assert ready and "STATUS=" in ready[0] and "requests" in ready[0]
    assert sum(m == "WATCHDOG=1" for m in early) >= 5  # every 100 ms: half of WATCHDOG_USEC
    d.signal(signal.SIGHUP)
    with Client(d.socket) as c:
        c.config_reload()
    around = _collect(notify, time.monotonic() + 0.5)
    reloading = [m for m in around if "RELOADING=1" in m]
    assert len(reloading) == 2 and all("MONOTONIC_USEC=" in m for m in reloading)
    assert sum("READY=1" in m for m in around) == 2
    assert d.stop() == 0
    last = _collect(notify, time.monotonic() + 0.3)
    assert any("STOPPING=1" in m for m in last)
    notify.close()


def test_idle_exit_is_quick_and_leaves_nothing(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        c.ping()
    started = time.perf_counter()
    assert daemon.stop() == 0
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"idle SIGTERM took {elapsed:.2f} s"
    assert sorted(p.name for p in daemon.socket.parent.iterdir()) == []


def test_journald_priorities(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(start=False)
    d.log_path.touch()
    st = d.log_path.stat()
    d.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    d.start()
    (d.home / ".claif.json").write_text("{ broken")  # an error line
    with Client(d.socket) as c:
        c.config_reload()
    assert d.stop() == 0
    lines = d.log_path.read_text().splitlines()
    assert lines and all(re.match(r"^<[0-7]>\{", line) for line in lines), lines[:5]
    assert any(line.startswith("<3>") and "config rejected" in line for line in lines)
    assert any(line.startswith("<6>") and "claifd listening" in line for line in lines)


def test_no_priority_prefix_outside_journald(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        c.ping()
    assert daemon.stop() == 0
    assert all(line.startswith("{") for line in daemon.log_path.read_text().splitlines())
    daemon.start()
