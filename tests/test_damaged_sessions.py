"""Damaged session stores lose nothing in silence (issue 30): a main file
emptied or cut next to its WAL, a WAL cut inside a frame, a database cut in
half after a clean stop. Every acknowledged message is recovered or counted
as lost; the damaged files are kept; status and health say so."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from claif_client import Client

from .conftest import DaemonProcess
from .test_cli import claif

SESSIONS = 20
PER_SESSION = 3  # sends: 6 messages each


def _store(d: DaemonProcess) -> Path:
    return d.home / ".claif" / "sessions" / "sessions.sqlite3"


def _fill(d: DaemonProcess) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {}
    with Client(d.socket) as c:
        for i in range(SESSIONS):
            sid = c.session_create(title=f"s{i}")["id"]
            sent[sid] = []
            for j in range(PER_SESSION):
                text = f"session {i} message {j} " + "z" * 400
                c.session_send(sid, text)
                sent[sid] += [text, "echo: " + text]
    return sent


def _record(c: Client) -> dict[str, object]:
    [record] = c.status()["sessions"]["quarantined"]
    return record  # type: ignore[no-any-return]


def _check(c: Client, name: str) -> dict[str, str]:
    return next(x for x in c.health()["checks"] if x["name"] == name)


def test_an_emptied_main_file_after_kill_9_loses_nothing(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    sent = _fill(d)
    d.kill()
    store = _store(d)
    wal = Path(f"{store}-wal")
    assert wal.stat().st_size > 100_000  # everything acknowledged is in the WAL
    store.write_bytes(b"")
    d.start()
    with Client(d.socket) as c:
        record = _record(c)
        assert "empty" in str(record["reason"])
        assert record["salvaged"] == SESSIONS and record["messages_lost"] == 0
        assert record["messages_salvaged"] == SESSIONS * PER_SESSION * 2
        for sid, texts in sent.items():
            assert [m["content"] for m in c.session_get(sid)["messages"]] == texts
        assert _check(c, "sessions")["status"] == "unhealthy"
        # Someone looked: acknowledged, the files stay, health stops saying so (and after a restart too).
        [done] = c.session_recover()["acknowledged"]
        assert done["path"] == record["path"] and c.status()["sessions"]["unacknowledged"] == []
        assert _check(c, "sessions")["status"] != "unhealthy"
    aside = Path(str(record["path"]))
    assert aside.exists() and Path(f"{aside}-wal").stat().st_size > 100_000  # kept, not deleted
    assert d.stop() == 0
    d.start()
    with Client(d.socket) as c:
        assert _check(c, "sessions")["status"] == "ok"
    assert d.stop() == 0


def test_a_wal_cut_inside_a_frame_is_said_and_the_rest_recovered(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    sent = _fill(d)
    d.kill()
    wal = Path(f"{_store(d)}-wal")
    size = wal.stat().st_size
    os.truncate(wal, size // 2 + 1000)
    d.start()
    with Client(d.socket) as c:
        record = _record(c)
        assert "cut" in str(record["reason"]) and "lost" in str(record["reason"])
        readable = {s["id"] for s in c.session_list(limit=100)["sessions"]}
        assert record["salvaged"] == len(readable) and 0 < len(readable) < SESSIONS
        for sid in readable:  # what survived is whole, in order
            messages = [m["content"] for m in c.session_get(sid)["messages"]]
            assert messages == sent[sid][:len(messages)]
        check = _check(c, "sessions")
        assert check["status"] == "unhealthy" and str(record["path"]) in check["detail"]
    assert d.stop() == 0
    d.start()  # not acknowledged: still said after a restart
    with Client(d.socket) as c:
        assert c.status()["sessions"]["unacknowledged"][0]["path"] == record["path"]
        assert _check(c, "sessions")["status"] == "unhealthy"
    out = claif("session", "recover", socket=d.socket)
    assert out.returncode == 0 and str(record["path"]) in out.stdout and "acknowledged" in out.stdout
    with Client(d.socket) as c:
        assert _check(c, "sessions")["status"] != "unhealthy"
    assert d.stop() == 0


def test_a_database_cut_in_half_after_a_clean_stop_is_read_row_by_row(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"})
    sent = _fill(d)
    assert d.stop() == 0  # checkpointed: the main file holds everything
    store = _store(d)
    os.truncate(store, store.stat().st_size // 2)
    copy = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:  # what sqlite3 itself can still read, row by row
        readable_rows = len(list(copy.execute("SELECT id FROM sessions ORDER BY rowid")))
    except sqlite3.Error:
        readable_rows = -1
    copy.close()
    d.start()
    with Client(d.socket) as c:
        record = _record(c)
        assert record["salvaged"] >= max(readable_rows, 1)
        total = SESSIONS * PER_SESSION * 2
        assert record["messages_salvaged"] + record["messages_lost"] == total  # every message accounted for
        listed = {s["id"] for s in c.session_list(limit=100)["sessions"]}
        assert len(listed) == record["salvaged"] and listed <= set(sent)
        assert _check(c, "sessions")["status"] == "unhealthy"
    assert d.stop() == 0
