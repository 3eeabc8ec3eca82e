"""`claifd install-user-units`: the systemd user service for the daemon.

`Type=notify`: the daemon tells systemd it is ready once its socket accepts
connections. `ExecReload` sends SIGHUP (config reload). Stopping sends SIGTERM,
which drains requests in flight; `TimeoutStopSec` leaves room for the default
30 s drain.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["render_service", "unit_dir", "install_user_units", "SERVICE_NAME"]

SERVICE_NAME = "claifd.service"

_TEMPLATE = """\
[Unit]
Description=claifd: local daemon for LLM APIs (pool, cache, sessions)

[Service]
Type=notify
ExecStart={exec_start} --log-format json
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
TimeoutStopSec=45
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=default.target
"""


def _claifd_executable() -> str:
    beside = Path(sys.executable).with_name("claifd")
    if beside.exists():
        return str(beside)
    return shutil.which("claifd") or f"{sys.executable} -m claifd"


def render_service(exec_start: str | None = None) -> str:
    return _TEMPLATE.format(exec_start=exec_start or _claifd_executable())


def unit_dir() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path(os.environ.get("HOME") or Path.home()) / ".config")
    return Path(config_home) / "systemd" / "user"


def install_user_units(*, dry_run: bool = False) -> int:
    target = unit_dir() / SERVICE_NAME
    text = render_service()
    if dry_run:
        print(f"# would write {target}")
        print(text, end="")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    print(f"wrote {target}")
    print("enable it with: systemctl --user daemon-reload && systemctl --user enable --now claifd")
    return 0
