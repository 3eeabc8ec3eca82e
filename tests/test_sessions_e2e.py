"""Sessions through the real daemon: durability, eviction, order, trimming, the CLI."""

from __future__ import annotations

import json
import resource
import signal
import sqlite3
import subprocess
import threading

import anyio
import pytest

from claif_client import AsyncClient, BadRequest, ClaifError, Client, NotFound, UpstreamError
from claif_client.errors import StorageError

from .conftest import DaemonProcess, Sim, eventually, sim_env
from .test_cli import CLAIF, claif

OPENAI = "openai/gpt-4o-mini"


def texts(session: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(m["role"], m["content"]) for m in session["messages"]]


def test_create_send_get_list_delete(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        s = c.session_create(title="planning", system="be brief", metadata={"team": "core"})
        reply, info = c.session_send(s["id"], "hello")
        assert reply.text == "echo: hello"
        assert info == {"session_id": s["id"], "message_index": 1, "dropped": 0, "model": "echo/default"}
        assert c.complete("second", session=s["id"]).text == "echo: second"  # the contract's way
        stream = c.stream("third", session=s["id"])
        assert "".join(stream) == "echo: third" and stream.info["message_index"] == 5
        got = c.session_get(s["id"])
        assert texts(got) == [("user", "hello"), ("assistant", "echo: hello"), ("user", "second"),
                              ("assistant", "echo: second"), ("user", "third"), ("assistant", "echo: third")]
        assert got["title"] == "planning" and got["system"] == "be brief" and got["messages"][1]["model"] == "echo/default"
        assert got["created"] <= got["updated"]
        c.session_create(title="other", metadata={"team": "ops"})
        listing = c.session_list()
        assert listing["total"] == 2 and listing["sessions"][0]["title"] == "other"
        only = c.session_list(metadata={"team": "core"})
        assert [r["id"] for r in only["sessions"]] == [s["id"]] and only["sessions"][0]["message_count"] == 6
        assert c.session_list(limit=1, offset=1)["sessions"][0]["id"] == s["id"]
        c.session_delete(s["id"])
        with pytest.raises(NotFound):
            c.session_get(s["id"])
        with pytest.raises(NotFound):
            c.session_send(s["id"], "gone")
        assert c.status()["sessions"]["total"] == 1


def test_the_session_context_goes_upstream_and_through_the_cache(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        a = c.session_create(model=OPENAI, system="sys prompt")
        b = c.session_create(model=OPENAI, system="sys prompt")
        c.session_send(a["id"], "first question")
        c.session_send(a["id"], "second question")
        body = sim.requests()[-1]["body"]
        assert [m["content"] for m in body["messages"]] == [
            "sys prompt", "first question", "Simulated reply to: first question", "second question",
        ]
        # The same conversation in another session is a cache hit: the full context is the key.
        r1, _ = c.session_send(b["id"], "first question")
        r2, _ = c.session_send(b["id"], "second question")
        assert (r1.cached, r2.cached) == ("exact", "exact")
    assert sim.stats()["requests"] == 2


def test_failed_send_leaves_the_session_unchanged(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        s = c.session_create(model=OPENAI)
        c.session_send(s["id"], "ok")
        sim.configure(errors=[400])
        with pytest.raises(UpstreamError) as info:
            c.session_send(s["id"], "doomed")
        assert info.value.code == "upstream_error"
        assert len(c.session_get(s["id"])["messages"]) == 2
        assert c.session_send(s["id"], "retry")[1]["message_index"] == 3


def test_kill_9_right_after_an_acknowledged_send(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        s = c.session_create(title="durable")
        for i in range(20):
            c.session_send(s["id"], f"message {i}")
        reply, info = c.session_send(s["id"], "the last one")
        assert info["message_index"] == 41
    daemon.signal(signal.SIGKILL)  # no drain, no flush: only what was committed
    daemon.proc.wait()  # type: ignore[union-attr]
    daemon.start()
    with Client(daemon.socket) as c:
        got = c.session_get(s["id"])
    assert len(got["messages"]) == 42
    assert texts(got)[-2:] == [("user", "the last one"), ("assistant", "echo: the last one")]


def test_evicted_sessions_read_back_identical(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SESSION__MEMORY_BUDGET": "6000"})
    with Client(d.socket) as c:
        ids = []
        for i in range(12):
            s = c.session_create(title=f"s{i}", metadata={"i": i})
            for j in range(3):
                c.session_send(s["id"], f"s{i} m{j} " + "pad " * 20)
            ids.append(s["id"])
            status = c.status()["sessions"]
            assert status["memory_bytes"] <= 6000
        assert status["evictions"] > 0 and status["in_memory"] < 12
        before = {sid: c.session_get(sid) for sid in ids}
        again = {sid: c.session_get(sid) for sid in reversed(ids)}
        assert c.status()["sessions"]["loads"] > 0
    strip = lambda doc: {k: v for k, v in doc.items() if k != "accessed"}  # noqa: E731
    assert {k: strip(v) for k, v in before.items()} == {k: strip(v) for k, v in again.items()}
    assert all(len(doc["messages"]) == 6 for doc in before.values())
    assert d.stop() == 0


def test_lowering_the_budget_evicts_at_once(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        ids = [c.session_create(title=f"t{i}")["id"] for i in range(10)]
        for sid in ids:
            c.session_send(sid, "hello " * 30)
        status = c.status()["sessions"]
        assert status["in_memory"] == 10
        c.config_set("session.memory_budget", status["memory_bytes"] // 3)
        after = c.status()["sessions"]
        assert after["memory_bytes"] <= status["memory_bytes"] // 3 and after["in_memory"] < 10
        assert after["evictions"] >= 6
        assert all(len(c.session_get(sid)["messages"]) == 2 for sid in ids), "nothing lost"


def test_concurrent_sends_keep_arrival_order(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(hold=True)  # the first send waits upstream until all eight have arrived

    async def main() -> str:
        async with AsyncClient(upstream_daemon.socket) as c:
            s = await c.session_create(model=OPENAI)
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(c.session_send, s["id"], f"msg {i}")
                    # A known arrival order: the next starts once the daemon has this one.
                    while (await c.status())["in_flight"] < i + 1:
                        await anyio.sleep(0.001)
                await anyio.to_thread.run_sync(lambda: sim.http.post("/_sim/release").raise_for_status())
            return s["id"]  # type: ignore[no-any-return]

    sid = anyio.run(main)
    with Client(upstream_daemon.socket) as c:
        got = c.session_get(sid)
    users = [content for role, content in texts(got) if role == "user"]
    assert users == [f"msg {i}" for i in range(8)]
    assert texts(got)[1::2] == [("assistant", f"Simulated reply to: msg {i}") for i in range(8)]
    # Each send saw the conversation so far: the last request carried all of it.
    assert len(sim.requests()[-1]["body"]["messages"]) == 15


def test_trimming_is_reported(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_SESSION__CONTEXT__MAX_TOKENS="120", CLAIF_SESSION__CONTEXT__RECENT="4"))
    with Client(d.socket) as c:
        s = c.session_create(model=OPENAI)
        dropped = [c.session_send(s["id"], f"question {i} " + "word " * 20)[1]["dropped"] for i in range(6)]
        assert dropped[0] == 0 and dropped[-1] > 0
        sent = sim.requests()[-1]["body"]["messages"]
        assert sent[0]["content"].startswith("question 0"), "the first user message is kept"
        assert sent[-1]["content"].startswith("question 5")
        assert len(c.session_get(s["id"])["messages"]) == 12, "trimming only shapes the request"
    assert d.stop() == 0


def test_export_import_round_trip_and_fork(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        s = c.session_create(title="exported", system="sys", metadata={"k": 1})
        for i in range(3):
            c.session_send(s["id"], f"m{i}")
        doc = c.session_export(s["id"], "json")
        md = c.session_export(s["id"], "md")
        assert md.startswith("# exported") and "echo: m2" in md and "## 5. assistant" in md
        copy = c.session_import(doc)
        assert copy["id"] != s["id"]
        assert texts(c.session_get(copy["id"])) == texts(c.session_get(s["id"]))
        assert c.session_get(copy["id"])["metadata"] == {"k": 1}
        c.session_delete(s["id"])
        restored = c.session_import(doc)
        assert restored["id"] == s["id"], "a free id is kept on import"
        fork = c.session_fork(s["id"], at=1, title="branch")
        assert texts(c.session_get(fork["id"])) == [("user", "m0"), ("assistant", "echo: m0")]
        c.session_send(fork["id"], "diverge")
        assert len(c.session_get(s["id"])["messages"]) == 6, "the original is untouched"
        with pytest.raises(BadRequest, match="99"):
            c.session_fork(s["id"], at=99)
        with pytest.raises(BadRequest, match="not a session document"):
            c.session_import({"messages": "not a list"})


def test_auto_model_is_chosen_and_counted(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.config_set("auto", {"fast": "openai/fast-model", "balanced": "openai/mid-model", "capable": "openai/big-model"})
        s = c.session_create(model="auto")
        r1, info1 = c.session_send(s["id"], "hi")
        r2, info2 = c.session_send(s["id"], "Please analyze the trade-offs")
        assert (r1.model, r2.model) == ("openai/fast-model", "openai/big-model")
        assert info2["model"] == "openai/big-model"
        assert c.complete("hello", model="auto").model == "openai/fast-model"
        assert c.status()["auto_selected"] == {"openai/fast-model": 2, "openai/big-model": 1}


def test_cli_session_commands_and_chat(daemon: DaemonProcess, short_tmp) -> None:  # type: ignore[no-untyped-def]
    s = daemon.socket
    sid = claif("session", "new", "--title", "cli", "--meta", "team=x", socket=s).stdout.strip()
    doc = json.loads(claif("--json", "session", "new", "--title", "j", socket=s).stdout)
    assert set(doc) == {"id"}
    assert claif("ask", "via ask", "--session", sid, socket=s).stdout == "echo: via ask\n"
    out = json.loads(claif("--json", "ask", "json ask", "--session", sid, socket=s).stdout)
    assert out["session"]["message_index"] == 3
    chat = subprocess.run([CLAIF, "--socket", str(s), "chat", "--session", sid], input="from chat\n/exit\n",
                          capture_output=True, text=True, timeout=30)
    assert chat.returncode == 0 and "echo: from chat" in chat.stdout
    new_chat = subprocess.run([CLAIF, "--socket", str(s), "chat"], input="new one\n",
                              capture_output=True, text=True, timeout=30)
    assert "echo: new one" in new_chat.stdout and "session" in new_chat.stderr
    listing = json.loads(claif("--json", "session", "list", socket=s).stdout)
    assert {r["id"] for r in listing} >= {sid, doc["id"]}
    assert set(listing[0]) == {"id", "title", "updated", "message_count"}
    filtered = json.loads(claif("--json", "session", "list", "--meta", "team=x", socket=s).stdout)
    assert [r["id"] for r in filtered] == [sid]
    shown = json.loads(claif("--json", "session", "show", sid, socket=s).stdout)
    assert shown["id"] == sid and shown["title"] == "cli" and shown["messages"][-1]["content"] == "echo: from chat"
    assert "echo: via ask" in claif("session", "show", sid, socket=s).stdout
    exported = short_tmp / "s.json"
    assert claif("session", "export", sid, "--format", "json", "--out", str(exported), socket=s).returncode == 0
    assert "# cli" in claif("session", "export", sid, socket=s).stdout
    imported = claif("session", "import", str(exported), socket=s).stdout.strip()
    assert imported and imported != sid
    forked = claif("session", "fork", sid, "--at", "1", socket=s).stdout.strip()
    assert len(json.loads(claif("--json", "session", "show", forked, socket=s).stdout)["messages"]) == 2
    assert claif("session", "rm", forked, socket=s).returncode == 0
    assert claif("session", "show", forked, socket=s).returncode == 1


def test_sessions_survive_a_restart_and_drain(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        s = c.session_create(title="restart")
        c.session_send(s["id"], "before")
    assert daemon.stop() == 0
    daemon.start()
    with Client(daemon.socket) as c:
        assert texts(c.session_get(s["id"])) == [("user", "before"), ("assistant", "echo: before")]
        assert c.status()["sessions"]["total"] == 1
        assert eventually(lambda: c.status()["sessions"]["in_memory"] == 1)


def test_many_clients_many_sessions_no_message_lost(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def worker(k: int) -> None:
        try:
            with Client(daemon.socket) as c:
                sid = c.session_create(title=f"w{k}")["id"]
                ids.append(sid)
                for i in range(10):
                    c.session_send(sid, f"w{k} m{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Client(daemon.socket) as c:
        assert sum(len(c.session_get(sid)["messages"]) for sid in ids) == 8 * 20
        assert c.status()["sessions"]["commits"] < 8 * 11, "concurrent writes share commits"


def test_shutdown_with_session_sends_in_flight_does_not_hang(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_SERVER__DRAIN_TIMEOUT": "0.3"})
    with Client(d.socket) as c:
        sid = c.session_create()["id"]
    outcomes: list[str] = []

    def send(i: int) -> None:
        try:
            with Client(d.socket, timeout=30) as c:
                c.session_send(sid, " ".join(["w"] * (5 + i * 40)), extra={"delay_ms": 20})
                outcomes.append("ok")
        except ClaifError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    with Client(d.socket) as c:
        assert eventually(lambda: c.status()["in_flight"] == 4)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    for t in threads:
        t.join(timeout=10)
    # Sends to one session run one by one: the drain timeout cuts the longest
    # (3.3 s) and whatever waits behind it.
    assert len(outcomes) == 4 and set(outcomes) <= {"ok", "Cancelled", "ShuttingDown", "DaemonUnavailable"}, outcomes
    assert outcomes.count("ok") < 4
    d.start()
    with Client(d.socket) as c:
        messages = c.session_get(sid)["messages"]
    # Every send either completed (and both its messages are there) or failed (and none are).
    assert len(messages) == 2 * outcomes.count("ok")
    assert d.stop() == 0


def test_an_acknowledged_send_is_committed_and_fsynced(daemon: DaemonProcess) -> None:
    """Durability without luck: the writer runs with synchronous=FULL, and a
    send's rows are readable by another SQLite connection the moment its
    reply arrives (a kill -9 could not tell a missing fsync)."""
    with Client(daemon.socket) as c:
        assert c.status()["sessions"]["synchronous"] == "full"  # answered: the store is open
        db = sqlite3.connect(daemon.home / ".claif" / "sessions" / "sessions.sqlite3")
        sid = c.session_create(title="seen")["id"]
        for i in range(5):
            c.session_send(sid, f"m{i}")
            rows = db.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (sid,)).fetchone()[0]
            count = db.execute("SELECT message_count FROM sessions WHERE id = ?", (sid,)).fetchone()[0]
            assert rows == count == 2 * (i + 1)
    db.close()


def test_a_failed_commit_is_storage_error_and_changes_nothing(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # No file of the daemon's may grow past 4 MiB: a send of 2.5 MiB (plus
    # its echo) cannot be committed. Python ignores SIGXFSZ, so the write
    # fails with EFBIG instead of killing the process.
    limit = 4 * 1024 * 1024
    d = daemon_factory(env={"CLAIF_CACHE__ENABLED": "false"}, start=False)
    d.preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    d.start()
    with Client(d.socket, timeout=60) as c:
        sid = c.session_create(title="full disk")["id"]
        c.session_send(sid, "small")
        with pytest.raises(StorageError) as info:
            c.session_send(sid, "x" * (2560 * 1024))
        assert info.value.code == "storage_error"
        # The real cause, not a failed ROLLBACK's "no transaction is active".
        assert "SQLITE_IOERR_WRITE" in info.value.message and "transaction" not in info.value.message
        assert texts(c.session_get(sid)) == [("user", "small"), ("assistant", "echo: small")]
        assert c.status()["sessions"]["write_errors"] >= 1
        assert c.health()["status"] == "unhealthy"
        assert c.session_send(sid, "after")[1]["message_index"] == 3  # the store still works
        # A transient failure does not leave health unhealthy for ever.
        assert c.health()["status"] == "healthy"
        assert c.status()["sessions"]["write_error"] is None
    assert d.stop() == 0
    d.preexec = None
    d.start()
    with Client(d.socket) as c:
        assert [m for m, _ in texts(c.session_get(sid))] == ["user", "assistant"] * 2
    assert d.stop() == 0
