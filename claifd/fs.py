"""Small file-system helpers shared by the daemon's parts."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import structlog

__all__ = ["ensure_private_dir", "is_corruption", "database_files", "quarantine", "check_wal"]

log = structlog.get_logger("claifd.fs")


def ensure_private_dir(path: Path) -> bool:
    """Create `path` and any missing parents with mode 0700 (`Path.mkdir`
    gives parents the umask's mode, which would leave ~/.claif readable by
    others). Existing directories are left alone. True if `path` was created."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    return bool(missing)


# ------------------------------------------------------------ SQLite files

# SQLite's result codes for a file that is damaged or is no database at all.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def is_corruption(exc: BaseException) -> bool:
    """Whether a sqlite3 error says the file itself is damaged (not full, not locked)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def database_files(path: Path) -> list[Path]:
    """A database and its WAL and shared-memory files."""
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def quarantine(path: Path, reason: str, *, wal_only: bool = False) -> Path:
    """Move a damaged database (and its -wal/-shm) aside, never delete it:
    `<name>.damaged-<time>`, for a person to inspect or recover by hand.
    `wal_only`: the database is sound, only its WAL (and -shm) go."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    pairs = list(zip(database_files(path), database_files(aside)))
    for src, dst in pairs[1:] if wal_only else pairs:
        if src.exists():
            os.replace(src, dst)
    log.error("damaged database moved aside", path=str(path), moved_to=str(aside), reason=reason)
    return aside


def check_wal(path: Path) -> str | None:
    """What is wrong with `path`'s WAL file, if it exists and is not one.

    SQLite ignores a WAL whose header is invalid and truncates it on the next
    write, silently dropping every change it held; we want that seen."""
    wal = Path(f"{path}-wal")
    try:
        with open(wal, "rb") as f:
            header = f.read(32)
    except FileNotFoundError:
        return None
    if not header:
        return None
    if len(header) < 32 or int.from_bytes(header[:4], "big") not in _WAL_MAGIC:
        return f"{wal} is not a valid WAL file (bad header)"
    return None
