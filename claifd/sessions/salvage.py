"""Sessions saved from a damaged store, row by row, as `sqlite3 .dump` does:
each table is scanned forwards and then backwards, so a damaged page costs
the rows on it, not the rows after it; messages whose session row is lost
are kept under a session rebuilt for them; and the report is the truth --
every session and message the old file still names is counted as saved or
lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..sqlite_salvage import rebuild
from .model import Session, SessionMessage
from .rows import ROW_ERRORS, json_or_none, lenient_text, message_of

__all__ = ["salvage"]


def _both_ways(db: sqlite3.Connection, query: str, forwards: str, backwards: str) -> Iterator[tuple[Any, ...]]:
    """The rows of `query` in one order until a damaged page, then in the other."""
    for order in (forwards, backwards):
        try:
            yield from db.execute(f"{query} ORDER BY {order}")
        except sqlite3.Error:
            continue


def _rows(db: sqlite3.Connection) -> tuple[dict[str, tuple[Any, ...]], dict[str, dict[int, tuple[Any, ...]]]]:
    sessions: dict[str, tuple[Any, ...]] = {}
    for row in _both_ways(db, "SELECT id, title, model, system, metadata, created, updated, accessed, message_count "
                              "FROM sessions", "rowid", "rowid DESC"):
        sessions.setdefault(row[0], row)
    messages: dict[str, dict[int, tuple[Any, ...]]] = {}
    for row in _both_ways(db, "SELECT session_id, seq, role, content, time, tokens, metadata, pinned, model "
                              "FROM messages", "session_id, seq", "session_id DESC, seq DESC"):
        messages.setdefault(row[0], {}).setdefault(row[1], row)
    return sessions, messages


def _message(row: tuple[Any, ...]) -> SessionMessage | None:
    try:
        return message_of(*row[2:])
    except ROW_ERRORS:
        return None


def salvage(damaged: Path, keep: Callable[[Session], None]) -> dict[str, int]:
    """Every session `damaged` (and its WAL) still holds, passed to `keep`;
    what was saved and lost, in sessions and in messages."""
    report = {"salvaged": 0, "lost": 0, "messages_salvaged": 0, "messages_lost": 0}
    image = damaged.with_name(damaged.name + ".rebuilt")
    try:
        if not rebuild(damaged, image):
            return report
        db = sqlite3.connect(f"file:{image}?mode=ro&immutable=1", uri=True)
    except (OSError, sqlite3.Error):
        return report
    db.text_factory = lenient_text
    try:
        sessions, messages = _rows(db)
    finally:
        db.close()
        image.unlink(missing_ok=True)
    for sid in sessions.keys() | messages.keys():
        row = sessions.get(sid)
        rows = messages.get(sid, {})
        kept = [m for m in (_message(rows[seq]) for seq in sorted(rows)) if m is not None]
        expected = max(int(row[8]) if row is not None and isinstance(row[8], int) else 0, len(rows))
        if row is not None:
            _, title, model, system, metadata, created, updated, accessed, _ = row
            session = Session(id=sid, title=str(title), model=model, system=system, metadata=json_or_none(metadata),
                              created=float(created), updated=float(updated), accessed=float(accessed), messages=kept)
        elif kept:  # its row was on a lost page: the messages keep their session
            first, last = kept[0].time, kept[-1].time
            session = Session(id=sid, title="(recovered)", created=first, updated=last, accessed=last, messages=kept)
        else:
            continue
        keep(session)
        report["salvaged"] += 1
        if expected and not kept:
            report["lost"] += 1  # its row survived, none of its messages
        report["messages_salvaged"] += len(kept)
        report["messages_lost"] += expected - len(kept)
    return report
