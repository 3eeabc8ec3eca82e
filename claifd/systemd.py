"""What the daemon says to systemd, and what systemd hands it, without libsystemd.

* Socket activation (sd_listen_fds(3)): `LISTEN_PID` = our pid and
  `LISTEN_FDS` = N mean fds 3 .. 3+N-1 are listening sockets made for us.
  The daemon serves the first and never unlinks its path (systemd owns it).
* Notifications (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`: `READY=1`
  with a first `STATUS=` line once the socket is served, `STATUS=` again
  every few seconds, `RELOADING=1` + `MONOTONIC_USEC=` and then `READY=1`
  around a configuration reload, `STOPPING=1` when draining, and
  `WATCHDOG=1` every `$WATCHDOG_USEC / 2`, sent from the event loop, so a
  loop that stalls stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable

import anyio
import structlog

__all__ = ["Notifier", "activated_socket", "SD_LISTEN_FDS_START", "STATUS_INTERVAL"]

log = structlog.get_logger("claifd.systemd")

SD_LISTEN_FDS_START = 3
# How often STATUS= is refreshed.
STATUS_INTERVAL = 5.0


def activated_socket() -> socket.socket | None:
    """The listening Unix socket systemd passed us, if it did (and it is one).

    The LISTEN_* variables are removed either way, so nothing we start
    inherits them.
    """
    pid, count = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count or not count.isdigit() or int(count) < 1:
        return None
    fd = SD_LISTEN_FDS_START
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        log.warning("LISTEN_FDS names a file descriptor that is no socket; ignoring it", fd=fd)
        return None
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        log.warning("the socket systemd passed is not a Unix stream socket; ignoring it",
                    family=str(sock.family), type=str(sock.type))
        sock.detach()
        return None
    sock.setblocking(False)
    os.set_inheritable(fd, False)
    if int(count) > 1:
        log.warning("systemd passed more sockets than one; serving the first", count=int(count))
    return sock


class Notifier:
    """sd_notify for one process; every method is a no-op without NOTIFY_SOCKET."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID")
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        # Seconds between WATCHDOG=1 pings: half the interval systemd expects.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self.sent = 0
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<Notifier {self.address or 'off'} watchdog={self.watchdog_interval}>"

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
            self.sent += 1
        except OSError as exc:
            log.warning("systemd notification failed", error=str(exc), fields=list(fields))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")

    def reloaded(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining requests in flight")

    async def run(self, status: Callable[[], str]) -> None:
        """Ping the watchdog and refresh STATUS= until cancelled."""
        if not self.address:
            return
        next_status = time.monotonic() + STATUS_INTERVAL
        step = min(self.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)
        while True:
            if self.watchdog_interval is not None:
                self.send("WATCHDOG=1")
            if time.monotonic() >= next_status:
                self.send(f"STATUS={status()}")
                next_status = time.monotonic() + STATUS_INTERVAL
            await anyio.sleep(step)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
