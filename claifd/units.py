"""`claifd install-user-units`: the systemd user service (and its socket).

Two units, written to `~/.config/systemd/user/`:

* `claifd.socket` listens on `%t/claif/claifd.sock` (`$XDG_RUNTIME_DIR`,
  0600 in a 0700 directory): clients can connect before the daemon runs, and
  systemd starts it on the first connection (socket activation).
* `claifd.service` is `Type=notify` (ready once it serves), with a watchdog,
  `ExecReload` that returns when the reload is applied (`claif config
  reload`), keys from `EnvironmentFile=-%h/.config/claif/env` (created 0600
  and empty if missing), and the sandboxing a user unit can take
  (`systemd-analyze security` rates it 1.5 "OK"; the test suite checks
  <= 2.5).

`ExecStart` must survive the source checkout being cleaned or moved, so it
points at a stable installation:

* the running `claifd`, when it is installed outside a source checkout
  (pipx, `pip install --user`, a venv of your own);
* otherwise (running from a checkout's `.venv`) a venv this command creates
  under `~/.local/share/claifd/venv`, into which it installs this checkout
  (a copy, not editable) with pip, as `make user-install` does;
* or any `claifd` named with `--exec-start PATH`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .fs import ensure_private_dir

__all__ = ["render_service", "render_socket", "unit_dir", "install_user_units", "SERVICE_NAME", "SOCKET_NAME",
           "STABLE_VENV"]

SERVICE_NAME = "claifd.service"
SOCKET_NAME = "claifd.socket"
# Where the stable installation goes when claifd runs from a source checkout.
STABLE_VENV = "~/.local/share/claifd/venv"
# The reference units in systemd/ are rendered with this ExecStart.
REFERENCE_BIN = "%h/.local/share/claifd/venv/bin"

_SOCKET = """\
[Unit]
Description=claifd socket: local daemon for LLM APIs
Documentation=https://github.com/claif/claifd#running-as-a-systemd-user-service

[Socket]
ListenStream=%t/claif/claifd.sock
SocketMode=0600
DirectoryMode=0700

[Install]
WantedBy=sockets.target
"""

_SERVICE = """\
[Unit]
Description=claifd: local daemon for LLM APIs (pool, cache, sessions)
Documentation=https://github.com/claif/claifd#running-as-a-systemd-user-service
Requires=claifd.socket
After=claifd.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart={bin}/claifd --log-format json
# Returns once the new configuration is applied (or rejected: see its output).
ExecReload={bin}/claif --socket %t/claif/claifd.sock config reload
Restart=on-failure
RestartSec=2
# The daemon pings the watchdog from its event loop every WatchdogSec/2: a
# stalled loop is restarted.
WatchdogSec=30
TimeoutStopSec=45
# API keys: ANTHROPIC_API_KEY=... and OPENAI_API_KEY=... (mode 0600).
EnvironmentFile=-%h/.config/claif/env
Environment=PYTHONUNBUFFERED=1

# Sandboxing: what the daemon needs is its state (~/.claif: config, cache,
# sessions), its runtime dir (the socket) and the network to the providers.
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths=-%h/.claif -%t/claif
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
PrivateIPC=yes
PrivateUsers=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallArchitectures=native
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
KeyringMode=private
RemoveIPC=yes
DevicePolicy=closed
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=default.target
"""


def render_service(bin_dir: str) -> str:
    """The service unit, its programs in `bin_dir` (claifd and claif)."""
    return _SERVICE.format(bin=bin_dir)


def render_socket() -> str:
    return _SOCKET


def unit_dir() -> Path:
    return _config_home() / "systemd" / "user"


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config")


def env_file() -> Path:
    return _config_home() / "claif" / "env"


def _source_checkout() -> Path | None:
    """The source checkout this claifd runs from, if it does (editable install)."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if (root / "pyproject.toml").exists() and (root / "client" / "pyproject.toml").exists():
        return root
    return None


def _running_bin() -> Path:
    return Path(sys.executable).parent


def install_user_units(*, dry_run: bool = False, exec_start: str | None = None) -> int:
    target_dir = unit_dir()
    checkout = _source_checkout()
    steps: list[str] = []
    if exec_start:
        bin_dir = Path(exec_start).expanduser().parent
    elif checkout is None:
        bin_dir = _running_bin()
    else:
        venv = Path(STABLE_VENV.replace("~", str(_home()), 1))
        bin_dir = venv / "bin"
        steps.append(f"create {venv} and install {checkout} into it with `make user-install` "
                     "(from its lock; a copy: cleaning the checkout keeps it)")
    service = render_service(str(bin_dir))
    if dry_run:
        for step in steps:
            print(f"# would {step}")
        print(f"# would write {target_dir / SOCKET_NAME}")
        print(render_socket(), end="")
        print(f"# would write {target_dir / SERVICE_NAME}")
        print(service, end="")
        if not env_file().exists():
            print(f"# would create {env_file()} (mode 0600) for API keys")
        return 0
    if checkout is not None and not exec_start:
        code = _install_stable_venv(checkout, bin_dir.parent)
        if code:
            return code
    target_dir.mkdir(parents=True, exist_ok=True)
    # The service may write only there (ProtectHome=read-only): make it now.
    ensure_private_dir(_home() / ".claif")
    for name, text in ((SOCKET_NAME, render_socket()), (SERVICE_NAME, service)):
        tmp = target_dir / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target_dir / name)
        print(f"wrote {target_dir / name}")
    keys = env_file()
    if not keys.exists():
        keys.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# API keys for claifd (read by systemd: KEY=value lines, no quotes needed).\n"
                    "#ANTHROPIC_API_KEY=sk-ant-...\n#OPENAI_API_KEY=sk-...\n")
        print(f"created {keys} (mode 0600): put your API keys there")
    print("\nthen:\n"
          "  systemctl --user daemon-reload\n"
          "  systemctl --user enable --now claifd.socket   # started on the first connection\n"
          "  systemctl --user status claifd                # after a first `claif ping`\n"
          "  systemctl --user reload claifd                # re-read the configuration\n"
          "  journalctl --user -u claifd -p warning        # its warnings and errors")
    return 0


def _install_stable_venv(checkout: Path, venv: Path) -> int:
    """The checkout's `make user-install`: the same versions, from its lock."""
    print(f"installing claifd from {checkout} into {venv} (make user-install) ...", flush=True)
    try:
        subprocess.run(["make", "--no-print-directory", "-C", str(checkout), "user-install", f"USER_VENV={venv}"],
                       check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"claifd: cannot install into {venv}: {exc}", file=sys.stderr)
        return 1
    return 0
