"""Small file-system helpers shared by the daemon's parts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ensure_private_dir"]


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
