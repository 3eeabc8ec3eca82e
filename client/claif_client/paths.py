"""Where the daemon's socket lives; the daemon and every client agree on this."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_socket_path", "default_socket_path"]


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
