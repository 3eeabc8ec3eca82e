"""Who may call the HTTP front: on its Unix socket, processes of the users
the main socket allows (peer credentials, as there); on TCP, callers that
present the local token (`claif token`: `Authorization: Bearer T` or
`x-api-key: T`). Provider keys never leave the daemon.

And what no caller may do: on TCP, name a Host that is not the front's own
(a web page's request through a rebinding DNS name), and from anywhere, send
a cross-site Origin (a browser on another site), unless
`server.http.allowed_hosts` / `allowed_origins` list it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from ..listener import peer_ids

__all__ = ["TOKEN_FILE", "host_and_origin", "load_token", "peer_uid_in", "token_matches"]

TOKEN_FILE = "http-token"


def load_token(config_dir: Path) -> str:
    """The local token callers of the TCP listener present; made (0600) on first use."""
    path = config_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = "claif-" + secrets.token_urlsafe(32)
        tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
        return token
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{path} must be a regular file of ours, mode 0600")
        return f.read().strip()


def peer_uid_in(transport: Any, allowed: frozenset[int]) -> bool:
    """The main socket's rule: the peer's uid is one the daemon serves."""
    try:
        _, uid = peer_ids(transport.get_extra_info("socket"))
    except OSError:
        return False
    return uid in allowed


def token_matches(headers: dict[str, str], token: str | None) -> bool:
    if not token:
        return False
    offered = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(offered.encode(), token.encode())


_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def host_and_origin(headers: dict[str, str], unix: bool, address: str | None, allowed_hosts: frozenset[str],
                    allowed_origins: frozenset[str]) -> tuple[int, str] | None:
    """(403, why) for a foreign Host (TCP) or Origin; None when both are ours."""
    if not unix:
        host = headers.get("host", "").lower()
        port = address.rpartition(":")[2] if address else ""
        own = {f"{name}:{port}" for name in _LOOPBACK} | ({address.lower()} if address else set())
        if host not in own and host not in allowed_hosts:
            return 403, (f"Host {host[:100]!r} is not this daemon's address (server.http.allowed_hosts lists "
                         "others it answers)")
    origin = headers.get("origin")
    if origin is not None and origin.lower().rstrip("/") not in allowed_origins:
        return 403, f"Origin {origin[:100]!r} may not call this daemon (server.http.allowed_origins)"
    return None
