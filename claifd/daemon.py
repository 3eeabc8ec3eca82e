"""Starting, running and stopping the daemon.

Lifecycle: load the configuration, claim the socket (a lock file makes two
daemons on one socket impossible; a socket file nobody answers on is stale and
replaced), bind it with mode 0600 in a 0700 directory, serve until SIGTERM or
SIGINT, then drain: stop accepting, let requests in flight finish within
`server.drain_timeout` (a second signal cuts the wait short), cancel what is
left, remove the socket and exit 0. SIGHUP reloads the configuration.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from claif_client.paths import default_socket_path, resolve_socket_path

from . import __version__
from .app import App
from .config import (
    Config,
    ConfigError,
    build_config,
    default_global_path,
    env_layer,
    merge_layers,
    read_file_layer,
    unknown_keys,
)
from .errors import StartupError
from .logs import configure_logging
from .server import LISTEN_BACKLOG, Server

__all__ = ["DaemonOptions", "run", "claim_socket", "bind_socket", "load_config"]

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


def load_config(opts: DaemonOptions) -> Config:
    """Defaults < global file < project file < environment, validated whole."""
    layers = []
    for path in (opts.global_path, opts.project_path):
        layer = read_file_layer(path)
        for key in unknown_keys(layer):
            log.warning("unknown config key ignored", key=key, file=str(path))
        layers.append(layer)
    layers.append(env_layer(os.environ))
    return build_config(merge_layers(*layers))


# ------------------------------------------------------------------ socket


def _prepare_directory(path: Path) -> None:
    parent = path.parent
    created = not parent.exists()
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = parent.stat()
    if stat.S_IMODE(st.st_mode) != 0o700:
        # Only tighten a directory that is ours to tighten: one we just made,
        # or the dedicated default one. Never chmod a shared parent like /tmp.
        if created or parent == default_socket_path().parent:
            os.chmod(parent, 0o700)
        elif st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            log.warning("socket directory is writable by others", directory=str(parent))


def claim_socket(path: Path) -> int:
    """Take the daemon lock for `path` and clear a stale socket; return the lock fd.

    Raises StartupError when another daemon holds the lock or answers on the
    socket, or when `path` exists and is not a socket.
    """
    _prepare_directory(path)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


def _notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd notification failed", error=str(exc))


# ------------------------------------------------------------------ running


async def _serve(opts: DaemonOptions, config: Config, path: Path) -> None:
    # The app builds its HTTP pool and limiters: it belongs inside the loop.
    app = App(config, socket_path=str(path))
    try:
        await _run_app(opts, app, path)
    finally:
        with anyio.move_on_after(5, shield=True):
            await app.aclose()
    log.info("claifd stopped", requests_total=app.requests_total)


async def _run_app(opts: DaemonOptions, app: App, path: Path) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        sock = bind_socket(path)
        async with anyio.create_task_group() as root:
            async with anyio.create_task_group() as requests:
                server = Server(app, requests)
                await app.start(requests)
                await server.start(sock)
                _notify_systemd("READY=1")
                log.info("claifd listening", socket=str(path), version=__version__, pid=os.getpid())
                signum = await _wait_for_stop(signals, opts, app)
                log.info("draining", signal=signal.Signals(signum).name, in_flight=app.in_flight.count)
                _notify_systemd("STOPPING=1")
                app.draining = True
                server.stop_accepting()
                path.unlink(missing_ok=True)
                await _drain(app, signals)
                server.close_connections()
                requests.cancel_scope.cancel()
            root.cancel_scope.cancel()


async def _wait_for_stop(signals: AsyncIterator[int], opts: DaemonOptions, app: App) -> int:
    async for signum in signals:
        if signum == signal.SIGHUP:
            _reload(opts, app)
            continue
        return signum
    raise AssertionError("signal receiver ended")


def _reload(opts: DaemonOptions, app: App) -> None:
    try:
        config = load_config(opts)
    except ConfigError as exc:
        app.config_last_error = str(exc)
        log.error("config reload failed; keeping the last good configuration", error=str(exc))
        return
    app.config = config
    app.config_generation += 1
    app.config_last_error = None
    log.info("config reloaded", generation=app.config_generation)


async def _drain(app: App, signals: AsyncIterator[int]) -> None:
    timeout = float(app.config.server.drain_timeout)
    async with anyio.create_task_group() as tg:

        async def cut_short() -> None:
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log.warning("second stop signal: cancelling requests in flight", in_flight=app.in_flight.count)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(cut_short)
        with anyio.move_on_after(timeout) as waited:
            await app.in_flight.wait_idle()
        if waited.cancelled_caught:
            log.warning("drain timeout: cancelling requests in flight", in_flight=app.in_flight.count, timeout_s=timeout)
        tg.cancel_scope.cancel()


def run(opts: DaemonOptions) -> int:
    """Run the daemon in the foreground; the process exit code."""
    try:
        config = load_config(opts)
    except ConfigError as exc:
        configure_logging(opts.log_format, opts.log_level or "info")
        log.error("invalid configuration", error=str(exc))
        return 1
    configure_logging(opts.log_format, opts.log_level or config.logging.level)
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
        anyio.run(_serve, opts, config, path, backend="asyncio", backend_options=backend_options)
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        return 1
    finally:
        # Remove the socket only if it is still ours (we hold the lock).
        path.unlink(missing_ok=True)
        os.close(lock_fd)
    return 0
