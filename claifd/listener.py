"""The main socket's listener: connections accepted (and refused past
`server.max_connections` or from another user), swept when silent or
stalled, file descriptors watched; each connection is a `server.Connection`."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import resource
import socket
import struct
import time
from pathlib import Path

import anyio
import anyio.abc
import structlog

from claif_client.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ErrorCode,
    Welcome,
)

from . import __version__
from .callers import Callers
from .dispatch import Dispatch
from .perf import Perf
from .server import CAPABILITIES, Connection
from .types import ServerState

log = structlog.get_logger("claifd.server")

# Pending connections the kernel queues for us; local clients connect in bursts
# (a batch script starting many workers), so be generous.
LISTEN_BACKLOG = 512


class Server:
    """Owns the listening socket, the live connections and the request tasks."""

    def __init__(self, dispatch: Dispatch, state: ServerState, task_group: anyio.abc.TaskGroup, callers: Callers,
                 perf: Perf | None = None) -> None:
        self.dispatch = dispatch
        # Each caller's project layer, by the file its Hello names.
        self.callers = callers
        self.perf = perf if perf is not None else Perf(enabled=False)
        self.state = state
        self.task_group = task_group
        self.decoder = dispatch.decoder(Cancel)
        self.welcome = Welcome(protocol=PROTOCOL_VERSION, daemon_version=__version__, capabilities=CAPABILITIES)
        self.connections: set[Connection] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self.socket_path: Path | None = None
        self._fd_warned = -3600.0

    def __repr__(self) -> str:
        return f"<Server socket={self.socket_path} connections={len(self.connections)}>"

    async def start(self, sock: socket.socket) -> None:
        """Serve connections on an already bound and listening Unix socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: Connection(self, next(self._ids)), sock=sock, backlog=LISTEN_BACKLOG
        )
        self.task_group.start_soon(self.sweep)

    def refuse_peer(self, conn: Connection, sock: socket.socket | None) -> str | None:
        """Why this connection's peer may not use the daemon (None: it may).

        The kernel says who is on the other end (SO_PEERCRED): the daemon's
        own user, and the uids in `server.allowed_uids`, get in; anyone else
        is told so and closed, whatever the socket's file mode allows.
        """
        if sock is None:
            return None
        try:
            pid, uid = peer_ids(sock)
        except OSError as exc:
            log.warning("cannot read the peer's credentials; refusing", conn=conn.cid, error=str(exc))
            return "the daemon could not verify who is connecting"
        if uid in self.state.allowed_uids:
            return None
        self.state.refused_peers += 1
        log.warning("refused a connection from another user", conn=conn.cid, uid=uid, pid=pid)
        return f"uid {uid} may not use this daemon (it serves uid {os.getuid()}; see server.allowed_uids)"

    async def sweep(self) -> None:
        """Close connections that stalled mid-frame or never finished their
        handshake within `server.frame_timeout`: each would hold a buffer
        (up to a whole frame) and a file descriptor for ever."""
        last_fd_check = 0.0
        while True:
            timeout = self.state.frame_timeout
            await anyio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            if now - last_fd_check >= FD_CHECK_INTERVAL:
                last_fd_check = now
                self.check_fds()
            for conn in list(self.connections):
                reason = conn.stalled(now, timeout)
                if reason is not None:
                    self.state.closed_stalled += 1
                    log.warning("closing a stalled connection", conn=conn.cid, reason=reason,
                                pending_bytes=conn.protocol.frames.pending_bytes)
                    conn.fail(ErrorCode.TIMEOUT, f"{reason} for {timeout:g} s (server.frame_timeout)")

    def check_fds(self) -> None:
        """Warn (once a minute at most) when file descriptors run short.

        At the limit the event loop accepts and at once closes new
        connections without a word (libuv's EMFILE handling): this line is
        how anyone learns why clients are being dropped."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                return
            used = limit  # not even one left to count them with
        self.state.open_fds = used
        if limit > 0 and used >= FD_WARN_RATIO * limit and time.monotonic() - self._fd_warned > 60:
            self._fd_warned = time.monotonic()
            log.error("running out of file descriptors: new connections will be refused",
                      open_fds=used, limit=limit, connections=len(self.connections))

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        for conn in list(self.connections):
            conn.close()


_UCRED_SIZE = struct.calcsize("3i")


def peer_ids(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, as the kernel says (SO_PEERCRED)."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED_SIZE))
    return pid, uid


# File descriptors are counted every few seconds; past this share of the
# soft limit the daemon says so.
FD_CHECK_INTERVAL = 2.0


FD_WARN_RATIO = 0.9
