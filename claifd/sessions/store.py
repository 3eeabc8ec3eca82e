"""The durable session store: SQLite (WAL) under `session.directory`.

Plain synchronous code, run in worker threads by the service: one writer
connection (every change goes through `apply`, a batch of operations in one
transaction) and one reader connection (WAL lets it read while the writer
writes; it sees committed data only).

Durability: `synchronous = FULL`, so a committed batch has been fsynced; the
service acknowledges a change only after its batch committed. A kill -9, or a
power cut, after an acknowledgement loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from ..fs import check_wal, ensure_private_dir, is_corruption, quarantine
from ..sqlite_salvage import inspect, wal_cut
from .model import Session, SessionMessage, SessionSummary
from .rows import ROW_ERRORS, json_or_none, lenient_text, message_of
from .salvage import salvage as salvage_store

__all__ = ["SessionStore", "CreateSession", "AppendMessages", "DeleteSession", "Op", "FILENAME", "DamagedSession"]

log = structlog.get_logger("claifd.sessions.store")

FILENAME = "sessions.sqlite3"
# Beside a damaged file moved aside: someone has looked at it (`claif session recover`).
ACKNOWLEDGED = ".acknowledged"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT,
    system TEXT,
    metadata TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    accessed REAL NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_updated ON sessions(updated);
CREATE TABLE IF NOT EXISTS health_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content BLOB NOT NULL,
    time REAL NOT NULL,
    tokens INTEGER NOT NULL,
    metadata TEXT,
    pinned INTEGER NOT NULL DEFAULT 0,
    model TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""

_SYNCHRONOUS = {0: "off", 1: "normal", 2: "full", 3: "extra"}
_enc = msgspec.msgpack.Encoder()


@dataclass
class CreateSession:
    session: Session


@dataclass
class AppendMessages:
    session_id: str
    first_seq: int
    messages: Sequence[SessionMessage]
    updated: float


@dataclass
class DeleteSession:
    session_id: str


Op = CreateSession | AppendMessages | DeleteSession


def _json(doc: Any) -> str | None:
    return json.dumps(doc) if doc else None


def _message_rows(session_id: str, first_seq: int, messages: Sequence[SessionMessage]) -> list[tuple[Any, ...]]:
    return [
        (session_id, first_seq + i, m.role, _enc.encode(m.content), m.time, m.tokens, _json(m.metadata),
         int(m.pinned), m.model)
        for i, m in enumerate(messages)
    ]


class DamagedSession(Exception):
    """A stored session whose rows cannot be read back."""


class SessionStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILENAME
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # What the writer really runs with, read back after open (shown in
        # status: an acknowledgement means "fsynced" only under "full").
        self.synchronous = "closed"
        # Damaged files moved aside at start-up, and what was saved from them.
        self.quarantined: list[dict[str, Any]] = []
        # Damaged files moved aside (this run or an earlier one) that nobody
        # has looked at yet: health is unhealthy until `acknowledge`.
        self.unacknowledged: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"<SessionStore {self.path}>"

    def open(self) -> None:
        """Open (or create) the store, checking it first.

        A WAL file that is not one is moved aside (SQLite would silently drop
        it, and every change in it). A database that fails SQLite's
        `quick_check` or is no database at all is moved aside whole, a new one
        is started, and every session that can still be read from the old
        file is copied into it: damage costs the damaged sessions, not all.
        """
        ensure_private_dir(self.path.parent)
        try:
            self._open()
        finally:
            self.unacknowledged = self._unacknowledged()

    def _unacknowledged(self) -> list[dict[str, Any]]:
        records = {r["path"]: r for r in self.quarantined}
        bases = set()
        for aside in self.path.parent.glob(self.path.name + ".damaged-*"):
            name = str(aside)
            if name.endswith((".rebuilt", ACKNOWLEDGED)):
                continue
            bases.add(name.removesuffix("-wal").removesuffix("-shm"))  # (a WAL alone may have been moved)
        return [records.get(base, {"path": base, "reason": "moved aside by an earlier run"})
                for base in sorted(bases) if not Path(base + ACKNOWLEDGED).exists()]

    def acknowledge(self) -> list[dict[str, Any]]:
        """Someone has looked: the damaged files stay where they are, health stops saying so."""
        done = list(self.unacknowledged)
        for record in done:
            Path(record["path"] + ACKNOWLEDGED).write_text(f"acknowledged at {time.time():.0f}\n")
        self.unacknowledged = []
        return done

    def _open(self) -> None:
        # Before SQLite sees them: a main file with no pages (or fewer than its
        # header says) next to a WAL would make SQLite delete the WAL, and a WAL
        # cut inside a frame would lose its tail in silence.
        damaged = inspect(self.path) or wal_cut(self.path)
        if damaged is not None:
            self._quarantine(damaged, salvage=True)
            return
        problem = check_wal(self.path)
        if problem is not None:
            self._quarantine(problem, salvage=False, wal_only=True)
        try:
            self._connect()
            verdict = self.writer.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {verdict})")
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc) and "malformed" not in str(exc):
                self.close()
                raise
            self.close()
            self._quarantine(f"{type(exc).__name__}: {exc}", salvage=True)

    def _connect(self) -> None:
        self._writer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._writer.execute("PRAGMA synchronous = FULL")
        self.synchronous = _SYNCHRONOUS[self._writer.execute("PRAGMA synchronous").fetchone()[0]]
        self._writer.executescript(_SCHEMA)
        self.path.chmod(0o600)
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._reader.execute("PRAGMA query_only = ON")
        # Damaged text must not make every listing fail: it reads with U+FFFD.
        self._reader.text_factory = lenient_text

    def _quarantine(self, reason: str, *, salvage: bool, wal_only: bool = False) -> None:
        aside = quarantine(self.path, reason, wal_only=wal_only)
        record: dict[str, Any] = {"path": str(aside), "reason": reason, "at": time.time()}
        self.quarantined.append(record)
        if salvage:
            self._connect()
            record.update(salvage_store(aside, lambda session: self.apply([CreateSession(session)])))
            log.error("sessions salvaged from a damaged store", moved_to=str(aside), **{
                k: record[k] for k in ("salvaged", "lost", "messages_salvaged", "messages_lost")})

    def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                db.close()
        self._writer = self._reader = None

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("session store is not open")
        return self._writer

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("session store is not open")
        return self._reader

    # -------------------------------------------------------------- writing

    def apply(self, ops: Sequence[Op]) -> None:
        """Every op in one transaction (one fsync): all or nothing."""
        db = self.writer
        with _transaction(db):
            for op in ops:
                self._apply_one(db, op)

    def _apply_one(self, db: sqlite3.Connection, op: Op) -> None:
        if isinstance(op, AppendMessages):
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           _message_rows(op.session_id, op.first_seq, op.messages))
            cur = db.execute(
                "UPDATE sessions SET updated = ?, accessed = ?, message_count = message_count + ? WHERE id = ?",
                (op.updated, op.updated, len(op.messages), op.session_id),
            )
            if cur.rowcount != 1:
                raise KeyError(op.session_id)
        elif isinstance(op, CreateSession):
            s = op.session
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.id, s.title, s.model, s.system, _json(s.metadata), s.created, s.updated, s.accessed, len(s.messages)),
            )
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _message_rows(s.id, 0, s.messages))
        else:
            db.execute("DELETE FROM messages WHERE session_id = ?", (op.session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (op.session_id,))

    # -------------------------------------------------------------- reading

    def load(self, session_id: str) -> Session | None:
        """The session, None if there is none; DamagedSession if its rows cannot be read."""
        return _read_session(self.reader, session_id)

    def probe_write(self, at: float) -> None:
        """The health check's write: one row, committed (and fsynced) like any change."""
        db = self.writer
        with _transaction(db):
            db.execute("INSERT OR REPLACE INTO health_probe VALUES (1, ?)", (at,))

    def probe_read(self) -> float | None:
        row = self.reader.execute("SELECT at FROM health_probe WHERE id = 1").fetchone()
        return None if row is None else float(row[0])

    def exists(self, session_id: str) -> bool:
        return self.reader.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def list(self, metadata: Mapping[str, Any] | None, offset: int, limit: int) -> tuple[int, list[SessionSummary]]:
        """Sessions whose metadata has every given key = value, most recently updated first."""
        where, args = [], []
        for key, value in (metadata or {}).items():
            where.append("json_extract(metadata, ?) = json_extract(?, '$')")
            args += [f'$."{key}"', json.dumps(value)]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        db = self.reader
        total = db.execute(f"SELECT COUNT(*) FROM sessions {clause}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT id, title, updated, message_count, model, metadata FROM sessions {clause} "
            "ORDER BY updated DESC, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return int(total), [
            SessionSummary(id=r[0], title=r[1], updated=r[2], message_count=r[3], model=r[4],
                           metadata=json_or_none(r[5]))
            for r in rows
        ]

    def counts(self) -> tuple[int, int]:
        """(sessions, messages) in the store."""
        row = self.reader.execute("SELECT COUNT(*), COALESCE(SUM(message_count), 0) FROM sessions").fetchone()
        return int(row[0]), int(row[1])


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error. A failed ROLLBACK
    is ignored: SQLite may have rolled back itself (a full disk, an I/O
    error), and the first error is the one to report."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise


def _read_session(db: sqlite3.Connection, session_id: str) -> Session | None:
    row = db.execute(
        "SELECT id, title, model, system, metadata, created, updated, accessed FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    try:
        messages = [
            message_of(*columns)
            for columns in db.execute(
                "SELECT role, content, time, tokens, metadata, pinned, model FROM messages "
                "WHERE session_id = ? ORDER BY seq",
                (session_id,),
            )
        ]
        sid, title, model, system, metadata, created, updated, accessed = row
        return Session(
            id=sid, title=title, model=model, system=system, metadata=json.loads(metadata) if metadata else None,
            created=created, updated=updated, accessed=accessed, messages=messages,
        )
    except ROW_ERRORS as exc:
        raise DamagedSession(f"session {session_id} is damaged and cannot be read ({type(exc).__name__}: {exc})") \
            from exc
