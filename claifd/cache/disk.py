"""The disk tier: one SQLite file in `cache.dir`, LRU-bounded in bytes.

Plain synchronous code: the service runs every call in its worker thread,
never on the event loop. The connection is used by one thread at a time.

Durability: WAL journal with synchronous=NORMAL, so a kill -9 at any moment
leaves a database that opens (at worst without the last writes, which for a
cache only costs a miss). A file that is not a usable database at all is
moved aside (`fs.quarantine`) and a new one started, at start-up or when
damage shows while running. A row whose blob fails its checksum or
does not decode is deleted and reported as a miss, never served.

`max_bytes` bounds the sum of the stored blobs (compressed payloads): after
every write, least-recently-used rows are deleted until the sum fits, and a
blob larger than the whole budget is not stored. Freed pages are returned to
the file system with incremental vacuum.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..fs import check_wal, ensure_private_dir, is_corruption, quarantine
from .entry import Codec, DamagedEntry, MemEntry, Payload

__all__ = ["DiskStore", "DiskHit", "FILENAME"]

log = structlog.get_logger("claifd.cache.disk")

FILENAME = "cache.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    created_at REAL NOT NULL,
    ttl REAL NOT NULL,
    fixed_ttl INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    last_access REAL NOT NULL,
    hits INTEGER NOT NULL,
    size INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_access ON entries(last_access);
CREATE INDEX IF NOT EXISTS entries_by_namespace ON entries(namespace);
CREATE TABLE IF NOT EXISTS health_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
-- The semantic tier's vectors: they leave with their entry (expiry, eviction,
-- delete, clear) through the trigger.
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    namespace TEXT NOT NULL,
    prompt TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS vectors_follow_entries AFTER DELETE ON entries
BEGIN DELETE FROM vectors WHERE key = OLD.key; END;
"""


@dataclass
class DiskHit:
    key: str
    namespace: str
    created_at: float
    ttl: float
    fixed_ttl: bool
    hits: int
    payload: Payload


class DiskStore:
    def __init__(self, directory: Path, max_bytes: int, codec: Codec) -> None:
        self.path = directory / FILENAME
        self.max_bytes = max_bytes
        self.codec = codec
        self.bytes = 0
        self.entries = 0
        self.evictions = 0
        # Keys evicted since `take_evicted` (the semantic index drops them).
        self.evicted: list[str] = []
        self.damaged = 0
        self._db: sqlite3.Connection | None = None
        # Damaged files moved aside since start (shown in status and health).
        self.quarantined: list[dict[str, Any]] = []
        # Hashes of every stored key, so that a miss -- the common case for
        # new requests -- is known on the event loop without a trip to the
        # worker thread (about 70 bytes per entry).
        self._present: set[int] = set()

    def __repr__(self) -> str:
        return f"<DiskStore {self.path} entries={self.entries} bytes={self.bytes}/{self.max_bytes}>"

    # -------------------------------------------------------------- opening

    def open(self) -> None:
        """Open (or create) the database. A file that is damaged or no
        database at all is moved aside (`fs.quarantine`) and a new one
        started: a cache is worth a fresh start, never a refused one. An
        unusable directory raises OSError (the service then serves from
        memory only)."""
        ensure_private_dir(self.path.parent)
        problem = check_wal(self.path)
        if problem is not None:
            self._quarantine(problem, wal_only=True)
        try:
            self._load()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self.close()
            self._quarantine(f"{type(exc).__name__}: {exc}")
            self._load()

    def recover(self, reason: str) -> None:
        """Damage found while running: move the file aside, start afresh."""
        self.close()
        self._quarantine(reason)
        self._load()

    def _quarantine(self, reason: str, wal_only: bool = False) -> None:
        aside = quarantine(self.path, reason, wal_only=wal_only)
        self.quarantined.append({"path": str(aside), "reason": reason, "at": time.time()})

    def _load(self) -> None:
        self._db = self._connect()
        # Reading every key walks the table and its index: damaged pages
        # there show up now, not in the middle of serving.
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        self.entries, self.bytes = int(row[0]), int(row[1])
        self._present = {_prefix(key) for (key,) in self._db.execute("SELECT key FROM entries")}
        self._db.execute("SELECT COUNT(*) FROM entries INDEXED BY entries_by_access").fetchone()
        self._evict()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective on a new file only
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT COUNT(*) FROM entries").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        os.chmod(self.path, 0o600)
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("disk store is not open")
        return self._db

    # -------------------------------------------------------------- reading

    def might_contain(self, key: str) -> bool:
        """False means certainly absent (safe to call from any thread)."""
        return _prefix(key) in self._present

    def get(self, key: str, now: float) -> DiskHit | None:
        row = self.db.execute(
            "SELECT namespace, created_at, ttl, fixed_ttl, expires_at, hits, checksum, blob FROM entries WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        namespace, created_at, ttl, fixed_ttl, expires_at, hits, checksum, blob = row
        if expires_at <= now:
            self._delete_keys([key])
            return None
        try:
            payload = self.codec.decode(blob, checksum)
        except DamagedEntry as exc:
            self.damaged += 1
            log.warning("damaged cache entry dropped", key=key[:16], error=str(exc))
            self._delete_keys([key])
            return None
        # The hit's count and access time are written back later, in a batch
        # (`touch_many`): a read stays a read.
        return DiskHit(key, namespace, created_at, ttl, bool(fixed_ttl), hits + 1, payload)

    # -------------------------------------------------------------- writing

    def put_many(self, entries: Iterable[MemEntry], now: float) -> int:
        """Store entries in one transaction; returns how many were stored."""
        stored = 0
        db = self.db
        db.execute("BEGIN")
        try:
            for entry in entries:
                try:
                    blob, checksum = self.codec.encode(entry)
                except Exception as exc:  # one bad entry must not cost the batch
                    log.warning("cache entry not storable; skipped", key=entry.key[:16], error=str(exc))
                    continue
                if len(blob) > self.max_bytes:
                    continue
                # Room first, then the row: `bytes` never exceeds the cap,
                # not even for a moment another thread could observe.
                if _prefix(entry.key) in self._present:  # else certainly not stored: no DELETE to run
                    self._delete_keys([entry.key])
                self._evict(self.max_bytes - len(blob))
                try:
                    db.execute(
                        "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (entry.key, entry.namespace, entry.created_at, entry.ttl, int(entry.fixed_ttl),
                         entry.expires_at, now, entry.hits, len(blob), checksum, blob),
                    )
                except (sqlite3.IntegrityError, OverflowError, ValueError) as exc:
                    log.warning("cache entry not storable; skipped", key=entry.key[:16], error=str(exc))
                    continue
                self.entries += 1
                self.bytes += len(blob)
                self._present.add(_prefix(entry.key))
                stored += 1
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            self._recount()
            raise
        return stored

    def put_vectors(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        """(key, scope, namespace, prompt, embedder, vector) rows of answers already stored."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO vectors SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS "
                           "(SELECT 1 FROM entries WHERE key = ?1)", rows)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def load_vectors(self, embedder: str, now: float) -> list[tuple[str, str, str, str, bytes]]:
        """The stored vectors of `embedder` whose entries have not expired."""
        return [tuple(row) for row in self.db.execute(
            "SELECT v.key, v.scope, v.namespace, v.prompt, v.vector FROM vectors v JOIN entries e USING (key) "
            "WHERE v.embedder = ? AND e.expires_at > ?", (embedder, now))]

    def touch_many(self, touches: Iterable[tuple[str, int, float, float]]) -> None:
        """Hits seen in memory: (key, hits, expires_at, last_access)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "UPDATE entries SET hits = MAX(hits, ?), expires_at = ?, last_access = MAX(last_access, ?) WHERE key = ?",
                [(hits, expires_at, last_access, key) for key, hits, expires_at, last_access in touches],
            )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def probe(self, at: float) -> None:
        """The health check: write a row, read it back."""
        self.db.execute("INSERT OR REPLACE INTO health_probe VALUES (1, ?)", (at,))
        row = self.db.execute("SELECT at FROM health_probe WHERE id = 1").fetchone()
        if row is None or float(row[0]) != at:
            raise sqlite3.DatabaseError(f"the probe row read back {row!r}")

    def delete(self, key: str) -> bool:
        return self._delete_keys([key]) > 0

    def clear(self, namespace: str | None = None) -> int:
        if namespace is None:
            count = self.db.execute("DELETE FROM entries").rowcount
        else:
            count = self.db.execute("DELETE FROM entries WHERE namespace = ?", (namespace,)).rowcount
        self._recount()
        self.db.execute("PRAGMA incremental_vacuum").fetchall()
        return int(count)

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict()

    # ------------------------------------------------------------ internals

    def _delete_keys(self, keys: list[str]) -> int:
        deleted = 0
        for key in keys:
            row = self.db.execute("DELETE FROM entries WHERE key = ? RETURNING size", (key,)).fetchone()
            if row is not None:
                deleted += 1
                self.entries -= 1
                self.bytes -= int(row[0])
                # A prefix shared with another key only costs that key a disk read.
                self._present.discard(_prefix(key))
        return deleted

    def _evict(self, limit: int | None = None) -> None:
        """Delete least-recently-used rows until the blobs fit `limit` (default `max_bytes`)."""
        limit = self.max_bytes if limit is None else limit
        evicted = False
        while self.bytes > limit and self.entries:
            rows = self.db.execute("SELECT key FROM entries ORDER BY last_access LIMIT 64").fetchall()
            for (key,) in rows:
                if self.bytes <= limit:
                    break
                if self._delete_keys([key]):
                    self.evictions += 1
                    self.evicted.append(key)
                evicted = True
        if evicted:
            self.db.execute("PRAGMA incremental_vacuum").fetchall()

    def take_evicted(self) -> list[str]:
        evicted, self.evicted = self.evicted, []
        return evicted

    def _recount(self) -> None:
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        self.entries, self.bytes = int(row[0]), int(row[1])
        self._present = {_prefix(key) for (key,) in self.db.execute("SELECT key FROM entries")}


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back after a failure, keeping that failure the one reported: on a
    full disk or an I/O error SQLite may have rolled back already, and the
    ROLLBACK's own "no transaction is active" would hide the real cause."""
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _prefix(key: str) -> int:
    # The process's string hash: cheap, and a collision only costs a disk read.
    return hash(key)
