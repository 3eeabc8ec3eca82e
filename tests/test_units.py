"""`claifd install-user-units`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from claifd.units import render_service

ROOT = Path(__file__).resolve().parent.parent


def run_units(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "claifd", "install-user-units", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_dry_run_writes_nothing(short_tmp: Path) -> None:
    out = run_units(short_tmp, "--dry-run")
    assert out.returncode == 0
    assert "[Service]" in out.stdout and "Type=notify" in out.stdout
    assert not (short_tmp / ".config").exists()


def test_writes_the_user_unit(short_tmp: Path) -> None:
    out = run_units(short_tmp)
    assert out.returncode == 0
    unit = short_tmp / ".config" / "systemd" / "user" / "claifd.service"
    text = unit.read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "claifd" in exec_line and "--log-format json" in exec_line
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_checked_in_unit_matches_the_generator() -> None:
    checked_in = (ROOT / "systemd" / "claifd.service").read_text()
    assert checked_in == render_service("%h/.local/share/claifd/venv/bin/claifd")
