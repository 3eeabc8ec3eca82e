"""Starting, running and stopping the daemon.

Lifecycle: load the configuration, take the socket systemd passed (socket
activation), or claim one (a lock file makes two daemons on one socket
impossible; a socket file nobody answers on is stale and replaced) and bind
it with mode 0600 in a 0700 directory; serve until SIGTERM or SIGINT, then
drain: stop accepting, let requests in flight finish within
`server.drain_timeout` (a second signal cuts the wait short), cancel what is
left, remove the socket and the lock file (never an activated socket) and
exit 0. SIGHUP reloads the configuration. systemd hears about each step
(`systemd.Notifier`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import resource
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
import watchfiles

from claif_client.paths import default_socket_path, resolve_socket_path

from . import __version__
from .app import App
from .config import ConfigError, default_global_path
from .config_manager import ConfigManager
from .errors import StartupError
from .fs import ensure_private_dir
from .listener import LISTEN_BACKLOG, Server
from .logs import configure_logging
from .systemd import Notifier, activated_socket

__all__ = ["DaemonOptions", "run", "claim_socket", "bind_socket", "config_manager", "watch_config"]

log = structlog.get_logger("claifd.daemon")


@dataclass
class DaemonOptions:
    socket: str | None = None
    config: str | None = None
    project_config: str | None = None
    log_format: str | None = None
    log_level: str | None = None

    @property
    def global_path(self) -> Path:
        return Path(self.config).expanduser() if self.config else default_global_path()

    @property
    def project_path(self) -> Path:
        return Path(self.project_config).expanduser() if self.project_config else Path.cwd() / ".claif.json"


def config_manager(opts: DaemonOptions) -> ConfigManager:
    return ConfigManager(opts.global_path, opts.project_path, os.environ)


# ------------------------------------------------------------------ socket


def _prepare_directory(path: Path) -> None:
    """Make sure the socket's directory is ours before anything is put in it.

    A directory someone else created (another user can pre-create
    /tmp/claif-<your uid>) or a symlink in its place is refused: whoever owns
    it could swap the socket for their own and read every prompt.
    """
    parent = path.parent
    try:
        created = ensure_private_dir(parent)
        st = parent.lstat()
    except OSError as exc:
        raise StartupError(f"cannot use the socket directory {parent}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"socket directory {parent} is a symlink or not a directory; refusing to use it")
    if st.st_uid not in (os.getuid(), 0):
        raise StartupError(
            f"socket directory {parent} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "someone else may control it: remove it, or choose another path with --socket"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        # Only tighten a directory that is ours to tighten: one we just made,
        # or the dedicated default one. Never chmod a shared parent like /tmp.
        if st.st_uid == os.getuid() and (created or parent == default_socket_path().parent):
            os.chmod(parent, 0o700)
        elif st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) and not st.st_mode & stat.S_ISVTX:
            raise StartupError(f"socket directory {parent} is writable by others and not sticky; refusing to use it")
        elif st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            log.warning("socket directory is shared with other users", directory=str(parent))


def claim_socket(path: Path) -> int:
    """Take the daemon lock for `path` and clear a stale socket; return the lock fd.

    Raises StartupError when another daemon holds the lock or answers on the
    socket, or when `path` exists and is not a socket. The lock file is
    opened without following a symlink and must be a regular file of ours:
    a planted link cannot make the daemon truncate someone's file.
    """
    _prepare_directory(path)
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise StartupError(f"cannot open the lock file {lock_path}: {exc.strerror} "
                           "(a symlink there is refused)") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise StartupError(f"lock file {lock_path} is not a regular file of yours; refusing to use it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"another claifd is already running on {path} (it holds {lock_path})") from None
    try:
        _clear_stale_socket(path)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _clear_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket", socket=str(path))
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise StartupError(f"cannot probe existing socket {path}: {exc}") from exc
    finally:
        probe.close()
    raise StartupError(f"a daemon is already answering on {path}")


def bind_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EINVAL or "too long" in str(exc):
            raise StartupError(f"socket path is too long for AF_UNIX ({len(str(path))} bytes): {path}") from exc
        raise StartupError(f"cannot bind {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


# ------------------------------------------------------------------ running


class LoopErrors:
    """The event loop's own error reports (an accept that failed with EMFILE,
    a callback that raised) as log lines, at most one a second per message:
    the default handler writes to `logging`, which nobody reads here."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        now = time.monotonic()
        if now - self._last.get(message, -10.0) < 1.0:
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return
        self._last[message] = now
        exc = context.get("exception")
        log.error("event loop error", message=message, error=f"{type(exc).__name__}: {exc}" if exc else None,
                  errno=getattr(exc, "errno", None), suppressed=self._suppressed.pop(message, 0))


async def _serve(opts: DaemonOptions, settings: ConfigManager, path: Path, activated: socket.socket | None) -> None:
    asyncio.get_running_loop().set_exception_handler(LoopErrors())
    # The app builds its HTTP pool and limiters: it belongs inside the loop.
    app = App(settings, socket_path=str(path))
    try:
        await _run_app(opts, app, path, activated)
    finally:
        with anyio.move_on_after(5, shield=True):
            await app.aclose()
    log.info("claifd stopped", requests_total=app.state.requests_total)


async def _run_app(opts: DaemonOptions, app: App, path: Path, activated: socket.socket | None) -> None:
    notifier = Notifier()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        sock = activated if activated is not None else bind_socket(path)
        async with anyio.create_task_group() as root:
            async with anyio.create_task_group() as requests:
                server = Server(app.dispatch, app.state, requests, app.callers, app.perf)
                await app.start(requests)
                # Watch before serving, then catch up on any edit made since
                # the first load, so no change can slip between the two.
                stop_watching = anyio.Event()
                await root.start(watch_config, app, stop_watching)
                await root.start(app.callers.watch)
                await app.config_reload("start-up")
                app.live_config.around_reload = (notifier.reloading, lambda: notifier.reloaded(app.status_line()))
                await server.start(sock)
                notifier.ready(app.status_line())
                root.start_soon(notifier.run, app.status_line)
                log.info("claifd listening", socket=str(path), version=__version__, pid=os.getpid(),
                         activated=activated is not None)
                signum = await _wait_for_stop(signals, opts, app)
                notifier.stopping()
                app.state.draining = True
                server.stop_accepting()
                if activated is None:
                    path.unlink(missing_ok=True)  # an activated socket is systemd's
                # Logged once it holds: no new connection gets in from here on.
                log.info("draining", signal=signal.Signals(signum).name, in_flight=app.state.in_flight.count)
                await _drain(app, signals)
                server.close_connections()
                await app.state.tasks.cancel_all()
                requests.cancel_scope.cancel()
            # Cancelling alone would leave watchfiles' thread in its wait
            # (up to its 5 s rust_timeout) and hold up the exit; this ends it
            # within one `step`.
            stop_watching.set()
            app.callers.stop()
            root.cancel_scope.cancel()
    notifier.close()


async def _wait_for_stop(signals: AsyncIterator[int], opts: DaemonOptions, app: App) -> int:
    async for signum in signals:
        if signum == signal.SIGHUP:
            await app.config_reload("SIGHUP")
            continue
        return signum
    raise AssertionError("signal receiver ended")


# Editors save by writing a temp file and renaming it, some in two steps:
# wait this long after the last event before reading (the issue allows 100 ms).
WATCH_DEBOUNCE_MS = 50


async def watch_config(
    app: App, stop: anyio.Event | None = None, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Reload when either config file is written, renamed over, deleted or created.

    The directories are watched (not the files), so a file that appears after
    start-up, or is replaced by a rename, is seen too. The global directory
    (~/.claif) is created if missing; a project directory that does not exist
    is not watched (SIGHUP and `config reload` still work).
    """
    settings = app.settings
    targets = {os.path.abspath(settings.global_path), os.path.abspath(settings.project_path)}
    ensure_private_dir(settings.global_path.parent)
    directories = sorted({os.path.dirname(t) for t in targets if os.path.isdir(os.path.dirname(t))})
    if not directories:
        task_status.started()
        return
    log.debug("watching config", directories=directories)
    # Our caller resumes only after this task next waits, and by then the
    # first step of the loop below has set up the inotify watches.
    task_status.started()
    async for changes in watchfiles.awatch(
        *directories, recursive=False, debounce=WATCH_DEBOUNCE_MS, step=10, ignore_permission_denied=True,
        stop_event=stop,
    ):
        if any(os.path.abspath(changed) in targets for _, changed in changes):
            await app.config_reload("file changed")


async def _drain(app: App, signals: AsyncIterator[int]) -> None:
    timeout = float(app.config.server.drain_timeout)
    async with anyio.create_task_group() as tg:

        async def cut_short() -> None:
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log.warning("second stop signal: cancelling requests in flight", in_flight=app.state.in_flight.count)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(cut_short)
        with anyio.move_on_after(timeout) as waited:
            await app.state.in_flight.wait_idle()
        if waited.cancelled_caught:
            log.warning("drain timeout: cancelling requests in flight", in_flight=app.state.in_flight.count, timeout_s=timeout)
        tg.cancel_scope.cancel()


def _raise_fd_limit() -> None:
    """Use the hard limit on open files: every client connection is one
    (systemd's soft default is 1024, its hard one far higher)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run(opts: DaemonOptions) -> int:
    """Run the daemon in the foreground; the process exit code."""
    # Every file the daemon creates (databases and their -wal/-shm files,
    # quarantined copies, config written by `config set`) is its user's alone.
    os.umask(0o077)
    _raise_fd_limit()
    configure_logging(opts.log_format, opts.log_level or "info")
    settings = config_manager(opts)
    try:
        settings.load()
    except ConfigError as exc:
        log.error("invalid configuration", error=str(exc))
        return 1
    if opts.log_level:
        # --log-level wins over every config layer, reloads included.
        settings.set_runtime("logging.level", opts.log_level)
    configure_logging(opts.log_format, settings.config.logging.level)
    # A socket systemd made for us (socket activation) is served as is,
    # unless a socket was named on the command line.
    activated = activated_socket() if not opts.socket else None
    lock_fd: int | None = None
    if activated is not None:
        path = Path(activated.getsockname())
    else:
        path = resolve_socket_path(opts.socket)
        try:
            lock_fd = claim_socket(path)
        except StartupError as exc:
            log.error("cannot start", error=str(exc))
            return 1
    try:
        backend_options = {}
        try:
            import uvloop  # noqa: F401

            backend_options["use_uvloop"] = True
        except ImportError:
            pass
        anyio.run(_serve, opts, settings, path, activated, backend="asyncio", backend_options=backend_options)
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        return 1
    finally:
        if lock_fd is not None:
            # Ours to remove while we hold the lock: nothing is left behind.
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".lock").unlink(missing_ok=True)
            os.close(lock_fd)
    return 0
