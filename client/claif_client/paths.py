"""Where the daemon's socket lives; the daemon and every client agree on this."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from .errors import UntrustedDaemon

__all__ = ["resolve_socket_path", "default_socket_path", "check_peer", "trusted_uids"]


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/claif/claifd.sock`, else `/tmp/claif-$UID/claifd.sock`."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "claif" / "claifd.sock"
    return Path(f"/tmp/claif-{os.getuid()}") / "claifd.sock"


def resolve_socket_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """An explicit path (`--socket`), else `CLAIF_SOCKET`, else the default."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("CLAIF_SOCKET")
    if from_env:
        return Path(from_env)
    return default_socket_path()


def trusted_uids() -> frozenset[int]:
    """Whose daemon a client talks to: its own user's, and the uids listed in
    `CLAIF_TRUSTED_UIDS` (comma-separated, for a daemon shared on purpose)."""
    extra = os.environ.get("CLAIF_TRUSTED_UIDS", "")
    uids = {os.getuid()}
    for part in extra.split(","):
        if part.strip().isdigit():
            uids.add(int(part))
    return frozenset(uids)


def check_peer(sock: socket.socket, path: Path) -> None:
    """Refuse (UntrustedDaemon) a socket served by a process of another user.

    Anyone can create `/tmp/claif-<your uid>` before you do and listen there;
    the kernel's SO_PEERCRED tells who really answers, so no prompt goes to
    another user's process.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        raise UntrustedDaemon(f"cannot tell who serves {path}: {exc}") from exc
    pid, uid, _ = struct.unpack("3i", raw)
    if uid not in trusted_uids():
        raise UntrustedDaemon(
            f"{path} is served by uid {uid} (pid {pid}), not by you (uid {os.getuid()}): refusing to use it; "
            "remove it, or trust that user with CLAIF_TRUSTED_UIDS"
        )
