"""The request log (`claif log`): every completion of every front, in
SQLite, across restarts: when, which front, namespace, model, outcome,
latency, tokens, cost, and (unless `log.content` is off, globally or for the
namespace) the prompt, the system prompt and the answer.

Recording stays off the hot path: a completion appends one tuple, holding
what it already has -- a request or its raw bytes, an answer or its cache
entry -- and a writer task hands the pending tuples to a thread every
`FLUSH_S`, which decodes the text and writes them in one transaction. A
crash loses at most that last fraction of a second of log (never an
answer). Retention: `log.max_entries` and `log.max_age`, applied after
writes. `claif log -q TEXT` searches prompts and answers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse

from .cache.entry import MemEntry
from .config import LogConfig
from .content import text_of
from .fs import ensure_private_dir

__all__ = ["CompletionLog", "FLUSH_S"]

log = structlog.get_logger("claifd.log")

FLUSH_S = 0.2
# Pending rows past this are written at once (a burst never holds much).
_BURST = 2000
# Text kept per field (a pasted book stays in the session, not in the log):
# with log.max_entries at 100,000, the log stays within ~2.5 GB at the worst.
_MAX_TEXT = 8 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    front TEXT NOT NULL,
    method TEXT NOT NULL,
    namespace TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ms REAL NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    prompt TEXT,
    system TEXT,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS log_at ON log (at);
"""
_COLUMNS = ("id", "at", "front", "method", "namespace", "provider", "model", "outcome", "ms", "input_tokens",
            "output_tokens", "cost_usd", "prompt", "system", "answer")
_INSERT = f"INSERT INTO log ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})"

# A completion as recorded on the hot path: (at, front, method, namespace, provider,
# model, outcome, seconds, input tokens, output tokens, cost, the request (a
# CompletionRequest, or raw bytes with their wire), the answer (a response or a cache entry)).
Pending = tuple[float, str, str, str | None, str, str, str, float, int, int, float, Any, Any]

_request_decoder = msgspec.msgpack.Decoder(CompletionRequest)


class CompletionLog:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.pending: list[Pending] = []
        self.written = 0
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._lock = threading.RLock()  # one thread at a time on the connection
        self._wake = anyio.Event()

    def __repr__(self) -> str:
        return f"<CompletionLog {self._path} pending={len(self.pending)} written={self.written}>"

    # ------------------------------------------------------------ hot path

    def add(self, row: Pending) -> None:
        config = self.config
        if not config.enabled:
            return
        if not config.content or (config.namespaces and not _keeps_text(config, row[3])):
            row = (*row[:11], None, None)  # the text never leaves this call
        self.pending.append(row)
        if len(self.pending) >= _BURST:
            self._wake.set()

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Write what is pending every FLUSH_S (sooner in a burst), until cancelled."""
        try:
            while True:
                with anyio.move_on_after(FLUSH_S):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()
                await anyio.to_thread.run_sync(self._close)

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        task_group.start_soon(self.run)

    def reconfigure(self, config: LogConfig) -> None:
        self.config = config

    async def flush(self) -> None:
        rows, self.pending = self.pending, []
        if rows:
            config = self.config
            await anyio.to_thread.run_sync(self._write, rows, config)

    async def query(self, limit: int, text: str | None) -> list[dict[str, Any]]:
        """The newest `limit` entries (oldest first), those whose prompt or
        answer holds `text` when given."""
        await self.flush()
        return await anyio.to_thread.run_sync(self._query, limit, text)

    # ------------------------------------------------------- in the thread

    def _open(self, config: LogConfig) -> sqlite3.Connection | None:
        path = Path(config.path).expanduser()
        if self._db is not None and path == self._path:
            return self._db
        self._close()
        try:
            ensure_private_dir(path.parent)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            self._report(f"cannot open the request log {path}: {exc}")
            return None
        self._db, self._path = db, path
        return db

    def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _report(self, error: str) -> None:
        if error != self.error:
            log.warning("request log: entries are lost until this is fixed", error=error)
        self.error = error

    def _write(self, rows: list[Pending], config: LogConfig) -> None:
        with self._lock:
            db = self._open(config)
            if db is None:
                return
            values = [_row(r, config) for r in rows]
            try:
                db.execute("BEGIN")  # one transaction for the lot (the connection is in autocommit mode)
                try:
                    db.executemany(_INSERT, values)
                    db.execute("DELETE FROM log WHERE at < ?", (time.time() - float(config.max_age),))
                    db.execute("DELETE FROM log WHERE id <= (SELECT max(id) FROM log) - ?", (config.max_entries,))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._report(f"cannot write the request log: {exc}")
                return
            self.written += len(values)
            self.error = None

    def _query(self, limit: int, text: str | None) -> list[dict[str, Any]]:
        with self._lock:
            db = self._open(self.config)
            if db is None:
                return []
            where, args = "", []
            if text:
                pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where = "WHERE prompt LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\'"
                args = [pattern, pattern]
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM log {where} ORDER BY id DESC LIMIT ?",
                              (*args, limit)).fetchall()
        out = []
        for row in reversed(rows):
            doc = dict(zip(_COLUMNS, row))
            doc["cached"] = str(doc["outcome"]).startswith("cached")
            doc["ms"] = round(doc["ms"], 3)
            out.append(doc)
        return out


def _keeps_text(config: LogConfig, namespace: str | None) -> bool:
    space = config.namespaces.get(namespace or "")
    return space is None or space.content


def _row(pending: Pending, config: LogConfig) -> tuple[Any, ...]:
    at, front, method, namespace, provider, model, outcome, seconds, tokens_in, tokens_out, cost, request, answer = \
        pending
    prompt = system = text = None
    if request is not None or answer is not None:  # (left out when recorded, if the config said so then)
        try:
            prompt, system = _request_text(request)
            text = _answer_text(answer)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, KeyError, AttributeError):
            pass  # text that cannot be read is left out; the figures are kept
    return (at, front, method, namespace, provider, model, outcome, seconds * 1000, tokens_in, tokens_out, cost,
            _cut(prompt), _cut(system), _cut(text))


def _cut(text: str | None) -> str | None:
    if text and len(text) > _MAX_TEXT:
        return f"{text[:_MAX_TEXT]} [... {len(text) - _MAX_TEXT} more characters not kept]"
    return text


# Texts read lately, by raw request bytes and by cache entry: a repeated hit is not decoded again.
_SEEN = 4096
_prompts: dict[tuple[bytes, str], tuple[str | None, str | None]] = {}
_answers: dict[str, str | None] = {}


def _request_text(request: Any) -> tuple[str | None, str | None]:
    """(the last user message, the system prompt) of a request or its raw bytes."""
    if request is None:
        return None, None
    if isinstance(request, tuple):  # (raw bytes, wire)
        found = _prompts.get(request)
        if found is None:
            if len(_prompts) >= _SEEN:
                _prompts.clear()
            found = _prompts[request] = _raw_text(request)
        return found
    assert isinstance(request, CompletionRequest)
    return _text_of_request(request)


def _raw_text(request: tuple[bytes, str]) -> tuple[str | None, str | None]:
    raw, wire = request
    if wire == "socket":
        return _text_of_request(_request_decoder.decode(raw))
    doc = msgspec.json.decode(raw)
    messages = doc.get("messages") or []
    said = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    system = doc.get("system") if wire == "anthropic" else next(
        (m.get("content") for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")),
        None)
    return (_text(said[-1].get("content")) if said else None), (_text(system) if system else None)


def _text_of_request(request: CompletionRequest) -> tuple[str | None, str | None]:
    users = [m for m in request.messages if m.role == "user"]
    prompt = text_of(users[-1].content, " ") if users else None
    system = text_of(request.system, "\n\n") if request.system is not None else None
    return prompt, system


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _answer_text(answer: Any) -> str | None:
    if isinstance(answer, MemEntry):
        key = answer.key
        if key in _answers:
            return _answers[key]
        if len(_answers) >= _SEEN:
            _answers.clear()
        text = _answers[key] = answer.response().text
        return text
    if isinstance(answer, CompletionResponse):
        return answer.text
    return None
