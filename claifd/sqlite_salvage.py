"""Damaged SQLite files, at the level of the file format: what is wrong with
a database before SQLite opens it, and a readable image rebuilt from what is
left of it and its WAL.

Why before: SQLite, opening a main file with no pages (0 bytes, or cut) next
to a WAL, treats the database as empty and deletes the WAL -- every change
it held, gone in silence. So the daemon looks first (`inspect`), and when
something is wrong moves both aside untouched; `rebuild` then reads the
WAL's committed frames itself (salts and checksums checked, as SQLite does)
over whatever the main file still has, into a new file that salvage can
open read-only. Format: https://www.sqlite.org/fileformat2.html
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["inspect", "rebuild", "wal_cut"]

_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24


def _page_size(raw: int) -> int:
    return 65536 if raw == 1 else raw


def inspect(path: Path) -> str | None:
    """What is wrong with the main file at `path` that SQLite would not
    report before losing data, or None (missing or sound-looking)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if size == 0:
        return f"{path.name} is empty next to a WAL of {wal_size} bytes" if wal_size else None
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100:
        return f"{path.name} is {size} bytes, shorter than a SQLite header"
    if header[:16] != _MAGIC:
        return f"{path.name} is not a SQLite database (bad header)"
    page_size = _page_size(int.from_bytes(header[16:18], "big"))
    pages = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    changes = int.from_bytes(header[24:28], "big")
    if pages and valid_for == changes and size < pages * page_size:
        return f"{path.name} is {size} bytes, shorter than its header says ({pages} pages of {page_size})"
    return None


def _checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    for a, b in struct.iter_unpack(">II" if big else "<II", data):
        s0 = (s0 + a + s1) & 0xFFFFFFFF
        s1 = (s1 + b + s0) & 0xFFFFFFFF
    return s0, s1


def _committed_frames(wal: bytes) -> tuple[int, dict[int, bytes], int]:
    """(page size, the newest committed image of each page, the database's
    size in pages at the last commit) from a WAL's valid frames."""
    if len(wal) < _WAL_HEADER:
        return 0, {}, 0
    magic, _, raw_size, _, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:_WAL_HEADER])
    if magic not in _WAL_MAGIC:
        return 0, {}, 0
    big = bool(magic & 1)
    page_size = _page_size(raw_size)
    s0, s1 = _checksum(wal[:24], 0, 0, big)
    if (s0, s1) != (c1, c2):
        return 0, {}, 0
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    db_pages = 0
    offset = _WAL_HEADER
    while offset + _FRAME_HEADER + page_size <= len(wal):
        pgno, commit, f_salt1, f_salt2, f1, f2 = struct.unpack(">6I", wal[offset:offset + _FRAME_HEADER])
        data = wal[offset + _FRAME_HEADER:offset + _FRAME_HEADER + page_size]
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        s0, s1 = _checksum(wal[offset:offset + 8], s0, s1, big)
        s0, s1 = _checksum(data, s0, s1, big)
        if (s0, s1) != (f1, f2):
            break  # a torn or garbage frame: nothing after it is valid
        pending[pgno] = data
        if commit:
            pages.update(pending)
            pending.clear()
            db_pages = commit
        offset += _FRAME_HEADER + page_size
    return page_size, pages, db_pages


def wal_cut(main: Path) -> str | None:
    """Whether `main`'s WAL was cut or overwritten after its last good frame
    (SQLite would drop the rest without a word), or None. Frames of an older
    generation (other salts) after the valid ones are normal, and are not."""
    wal_path = Path(f"{main}-wal")
    try:
        wal = wal_path.read_bytes()
    except FileNotFoundError:
        return None
    if len(wal) < _WAL_HEADER:
        return None
    magic, _, raw_size, _, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:_WAL_HEADER])
    if magic not in _WAL_MAGIC:
        return None  # not a WAL at all: fs.check_wal's case
    big = bool(magic & 1)
    frame = _FRAME_HEADER + _page_size(raw_size)
    s0, s1 = _checksum(wal[:24], 0, 0, big)
    if (s0, s1) != (c1, c2):
        return None
    offset = _WAL_HEADER
    while offset + frame <= len(wal):
        f_salt1, f_salt2, f1, f2 = struct.unpack(">4I", wal[offset + 8:offset + _FRAME_HEADER])
        if (f_salt1, f_salt2) != (salt1, salt2):
            return None  # an older generation's frames: not ours to read
        s0, s1 = _checksum(wal[offset:offset + 8], s0, s1, big)
        s0, s1 = _checksum(wal[offset + _FRAME_HEADER:offset + frame], s0, s1, big)
        if (s0, s1) != (f1, f2):
            return f"{wal_path.name} is damaged at byte {offset}: frames after it are lost"
        offset += frame
    if offset != len(wal):
        return f"{wal_path.name} was cut at byte {len(wal)}, inside a frame: what followed is lost"
    return None


def rebuild(main: Path, out: Path) -> bool:
    """Write to `out` the database `main` and its WAL (`main`-wal) describe:
    the main file's pages with the WAL's committed frames over them. False
    when there is nothing to build from."""
    base = main.read_bytes() if main.exists() else b""
    wal_path = Path(f"{main}-wal")
    wal = wal_path.read_bytes() if wal_path.exists() else b""
    page_size, pages, db_pages = _committed_frames(wal)
    if not pages:
        if base[:16] != _MAGIC or len(base) < 100:
            return False
        # A file cut short: its lost pages read as zeros (damaged pages to
        # SQLite, skipped row by row), so the pages before and after the cut
        # stay reachable.
        size = _page_size(int.from_bytes(base[16:18], "big")) * int.from_bytes(base[28:32], "big")
        out.write_bytes(base.ljust(size, b"\x00"))
        return True
    image = bytearray(base[:db_pages * page_size].ljust(db_pages * page_size, b"\x00"))
    for pgno, data in pages.items():
        if pgno <= db_pages:
            image[(pgno - 1) * page_size:pgno * page_size] = data
    if image[:16] != _MAGIC:
        return False  # no first page anywhere: no schema to read
    out.write_bytes(bytes(image))
    return True
