"""The CLI people already know (issue 32): real `claif` processes against a
real daemon."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time

from claif_client import Client

from .conftest import DaemonProcess, Sim, sim_env
from .test_cli import CLAIF, claif


def test_unknown_environment_names_are_warned_with_a_suggestion(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env={"CLAIF_API_KEY": "sk-x", "CLAIF_POOL_MAX_CONNECTIONS": "33",
                                           "CLAIF_SOCKT": "/tmp/x", "CLAIF_DEFAULT_MODEL": "echo/m"})
    with Client(d.socket) as c:
        warnings = c.status()["config"]["warnings"]
        assert c.config_get("pool.max_connections")["value"] == 100  # (not read)
    assert any("$CLAIF_API_KEY is not read" in w and "claif keys set" in w for w in warnings)
    assert any("$CLAIF_POOL_MAX_CONNECTIONS" in w and "$CLAIF_POOL__MAX_CONNECTIONS" in w for w in warnings)
    assert any("$CLAIF_SOCKT" in w and "did you mean $CLAIF_SOCKET?" in w for w in warnings)
    assert not any("CLAIF_DEFAULT_MODEL" in w for w in warnings)  # an alias that is read
    assert d.stop() == 0


def test_restart_only_keys_are_not_shown_as_applied(daemon: DaemonProcess) -> None:
    out = claif("config", "set", "cache.compression", "zstd", socket=daemon.socket)
    assert out.returncode == 1 and "read at start only" in out.stderr and "--scope global" in out.stderr
    assert "effective" not in out.stdout
    out = claif("config", "set", "cache.compression", "none", "--scope", "global", socket=daemon.socket)
    assert out.returncode == 0 and "not yet effective" in out.stdout and "restarts" in out.stdout
    daemon.stop()
    daemon.start()
    with Client(daemon.socket) as c:
        assert c.config_get("cache.compression")["value"] == "none"


def test_enum_errors_list_the_choices(daemon: DaemonProcess) -> None:
    out = claif("config", "set", "logging.level", "loud", socket=daemon.socket)
    assert out.returncode == 1 and "one of: debug, info, warning, error, critical" in out.stderr
    out = claif("--json", "config", "validate", "-", socket=daemon.socket, stdin=json.dumps(
        {"cache": {"compression": "lz4"}}))
    assert "one of: zlib, zstd, none" in out.stdout


def _upstream_messages(sim: Sim) -> list[tuple[str, str]]:
    body = sim.requests()[-1]["body"]
    return [(m["role"], m["content"]) for m in body["messages"]]  # type: ignore[index]


def test_dash_c_continues_the_last_exchange_from_this_cli(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env=sim_env(sim, CLAIF_CLIENT__MODEL="openai/gpt-4o-mini"))
    with Client(d.socket) as c:  # an older conversation that -c must not pick up
        old = c.session_create(title="older chat")["id"]
        for i in range(5):
            c.session_send(old, f"old message {i}")
    assert claif("ask", "my favourite fruit is mango", socket=d.socket).returncode == 0
    out = claif("ask", "-c", "what is my favourite fruit", socket=d.socket)
    assert out.returncode == 0, out.stderr
    assert _upstream_messages(sim) == [("user", "my favourite fruit is mango"),
                                       ("assistant", "Simulated reply to: my favourite fruit is mango"),
                                       ("user", "what is my favourite fruit")]
    out = claif("ask", "-c", "and the colour?", socket=d.socket)
    assert [m for _, m in _upstream_messages(sim)][-3:] == ["what is my favourite fruit",
                                                           "Simulated reply to: what is my favourite fruit",
                                                           "and the colour?"]
    # --cid continues a given conversation.
    out = claif("--json", "ask", "--cid", old, "one more", socket=d.socket)
    assert out.returncode == 0 and len(_upstream_messages(sim)) == 11
    assert json.loads(out.stdout)["session"]["session_id"] == old
    assert d.stop() == 0


def test_chat_takes_blocks_and_commands_that_never_reach_the_model(daemon_factory, sim: Sim, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env=sim_env(sim, CLAIF_CLIENT__MODEL="openai/gpt-4o-mini"))
    script = "\n".join(["/help", "/model anthropic/claude-sonnet-4-5", '"""', "def f(x):", "    return x + 1",
                        '"""', "/system be terse", "second question", f"/save {tmp_path}/chat.md", "/bogus", "/exit"])
    before = sim.stats()["requests"]
    out = claif("chat", socket=d.socket, stdin=script + "\n")
    assert out.returncode == 0, out.stderr
    assert "model openai/gpt-4o-mini" in out.stderr and "model anthropic/claude-sonnet-4-5" in out.stderr
    assert "/model NAME" in out.stderr and "unknown command /bogus" in out.stderr
    assert sim.stats()["requests"] - before == 2  # the two questions; no command was sent
    first, second = sim.requests()[-2:]
    assert first["path"] == "/v1/messages"
    assert first["body"]["messages"][-1]["content"] == "def f(x):\n    return x + 1"  # type: ignore[index]
    assert second["body"]["system"] == "be terse"  # type: ignore[index]
    assert "second question" in (tmp_path / "chat.md").read_text()
    # -c after a chat continues that chat.
    claif("ask", "-c", "third", socket=d.socket)
    assert [m for _, m in _upstream_messages(sim)][-1] == "third" and len(_upstream_messages(sim)) == 5
    assert d.stop() == 0


def test_double_dash_ends_the_options_and_a_misplaced_one_says_so(daemon: DaemonProcess) -> None:
    out = claif("ask", "--", "what", "does", "-m", "mean", socket=daemon.socket)
    assert (out.returncode, out.stdout) == (0, "echo: what does -m mean\n")
    out = claif("ask", "what", "does", "-m", "mean", socket=daemon.socket)
    assert out.returncode == 2 and "claif ask -- what does -m mean" in out.stderr
    out = claif("ask", "hi", "-o", "temprature", "0.2", socket=daemon.socket)
    assert "did you mean temperature?" in out.stderr


def test_ask_streams_on_a_terminal_and_not_when_piped(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env=sim_env(sim))
    sim.configure(token_delay_ms=80)
    prompt = "one two three four five six seven eight"
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIF_")}
    env["XDG_STATE_HOME"] = str(d.socket.parent / "state")
    started = time.monotonic()
    proc = subprocess.Popen([CLAIF, "--socket", str(d.socket), "ask", "-m", "openai/gpt-4o-mini", prompt],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    arrivals: list[tuple[float, bytes]] = []
    while True:
        try:
            piece = os.read(master, 4096)
        except OSError:
            break
        if not piece:
            break
        arrivals.append((time.monotonic() - started, piece))
    proc.wait(timeout=30)
    os.close(master)
    text = b"".join(p for _, p in arrivals).decode()
    assert "Simulated reply to: " + prompt in text
    assert len(arrivals) >= 3 and arrivals[-1][0] - arrivals[0][0] > 0.3, arrivals  # word by word
    piped = claif("ask", "-m", "openai/gpt-4o-mini", prompt, socket=d.socket)
    assert piped.stdout == "Simulated reply to: " + prompt + "\n"
    out = claif("ask", "--no-stream", "-m", "openai/gpt-4o-mini", "x", socket=d.socket)
    assert out.stdout == "Simulated reply to: x\n"
    assert d.stop() == 0


def test_the_log_remembers_across_a_restart_and_searches(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env=sim_env(sim, CLAIF_CLIENT__MODEL="openai/gpt-4o-mini"))
    claif("ask", "the capital of France", socket=d.socket)
    claif("ask", "--namespace", "private", "my bank password hint", socket=d.socket)
    with Client(d.socket) as c:
        c.config_set("log.namespaces.private.content", False, scope="global")
    claif("ask", "--namespace", "private", "my other secret", socket=d.socket)
    assert d.stop() == 0
    d.start()
    rows = json.loads(claif("--json", "log", "-n", "10", socket=d.socket).stdout)
    assert [r["prompt"] for r in rows] == ["the capital of France", "my bank password hint", None]
    assert rows[2]["namespace"] == "private" and rows[2]["output_tokens"] > 0
    found = json.loads(claif("--json", "log", "-q", "FRANCE", socket=d.socket).stdout)  # (case-insensitive)
    assert [r["prompt"] for r in found] == ["the capital of France"]
    assert json.loads(claif("--json", "log", "-q", "100%_", socket=d.socket).stdout) == []
    text = claif("log", "-n", "1", socket=d.socket).stdout
    assert text[:4].isdigit() and text[4] == "-"  # the date, not only the time
    # Retention.
    with Client(d.socket) as c:
        c.config_set("log.max_entries", 2)
    claif("ask", "one more", socket=d.socket)
    assert len(json.loads(claif("--json", "log", "-n", "10", socket=d.socket).stdout)) == 2
    assert d.stop() == 0


def test_status_fits_one_screen_and_flags_what_needs_a_look(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env={"CLAIF_POOL_MAX_CONNECTIONS": "33"})
    out = claif("status", socket=d.socket)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) <= 24, out.stdout
    for part in ("requests", "cache", "sessions", "upstream", "providers", "http", "process"):
        assert any(line.startswith(part + " ") for line in lines), part
    assert any(line.startswith("! config: $CLAIF_POOL_MAX_CONNECTIONS") for line in lines)
    assert json.loads(claif("--json", "status", socket=d.socket).stdout)["pool"]["max_connections"] == 100
    assert d.stop() == 0


def test_a_key_alone_is_enough(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in sim_env(sim).items() if k != "OPENAI_API_KEY"}
    d: DaemonProcess = daemon_factory(env=env)
    first = claif("ask", "hello", socket=d.socket)
    assert first.returncode == 0 and first.stdout == "Simulated reply to: hello\n", first.stderr
    assert "answering with anthropic/claude-sonnet-4-5, the only provider with an API key" in first.stderr
    assert sim.requests()[-1]["body"]["model"] == "claude-sonnet-4-5"  # type: ignore[index]
    again = claif("ask", "hello again", socket=d.socket)
    assert again.returncode == 0 and "answering with" not in again.stderr  # said once
    with Client(d.socket) as c:
        c.config_set("client.model", "echo/default")  # set, even to the shipped value: it is what answers
    assert claif("ask", "now?", socket=d.socket).stdout == "echo: now?\n"
    with Client(d.socket) as c:
        c.config_unset("client.model")
        c.config_set("providers.openai.api_key", "sk-second")
    assert claif("ask", "and now?", socket=d.socket).stdout == "echo: and now?\n"  # two keys: nothing is guessed
    assert d.stop() == 0


def wait_for(check, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_the_project_file_is_the_callers_not_the_daemons(daemon: DaemonProcess, short_tmp) -> None:  # type: ignore[no-untyped-def]
    s = daemon.socket
    project = short_tmp / "proj"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    (project / ".claif.json").write_text(json.dumps({"client": {"model": "echo/proj"}, "pool": {"max_connections": 7}}))

    def model(where) -> str:  # type: ignore[no-untyped-def]
        out = claif("--json", "ask", "which model", "--no-cache", socket=s, cwd=where)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["model"]  # type: ignore[no-any-return]

    # Found upward from a subdirectory; elsewhere the daemon's own configuration.
    assert model(deep) == "echo/proj"
    assert model(short_tmp) == "echo/default"
    # The same request bytes from two places are two requests (two cache keys).
    for where, expected in ((short_tmp, "echo/default"), (deep, "echo/proj"), (short_tmp, "echo/default")):
        out = claif("--json", "ask", "the same words", socket=s, cwd=where)
        assert json.loads(out.stdout)["model"] == expected
    got = json.loads(claif("--json", "config", "get", "client.model", socket=s, cwd=deep).stdout)
    assert got == {"key": "client.model", "value": "echo/proj", "source": "project"}
    # Only the caller keys: the pool stays the daemon's, and the file is told so.
    got = json.loads(claif("--json", "config", "get", "pool.max_connections", socket=s, cwd=deep).stdout)
    assert got["value"] == 100 and got["source"] == "default"
    sources = json.loads(claif("--json", "config", "sources", socket=s, cwd=deep).stdout)
    assert next(x for x in sources["sources"] if x["layer"] == "project")["path"] == str(project / ".claif.json")
    assert any("pool.max_connections" in w and "global" in w for w in sources["project_warnings"])
    # Watched: an edit applies to the next request.
    (project / ".claif.json").write_text(json.dumps({"client": {"model": "echo/edited"}}))
    assert wait_for(lambda: model(deep) == "echo/edited")
    # A broken edit keeps the last good content, and says why.
    (project / ".claif.json").write_text('{"client": {"model": ')
    assert wait_for(lambda: next(x for x in json.loads(claif("--json", "config", "sources", socket=s, cwd=deep).stdout)
                                 ["sources"] if x["layer"] == "project")["error"])
    assert model(deep) == "echo/edited"
    # `--scope project` where there is none creates one in the caller's directory.
    other = short_tmp / "other"
    other.mkdir()
    out = claif("config", "set", "client.model", "echo/other", "--scope", "project", socket=s, cwd=other)
    assert out.returncode == 0, out.stderr
    assert str(other / ".claif.json") in out.stdout
    assert json.loads((other / ".claif.json").read_text()) == {"client": {"model": "echo/other"}}
    assert model(other) == "echo/other" and model(short_tmp) == "echo/default"
    # A key of the daemon's is refused there, with where it belongs.
    out = claif("config", "set", "pool.max_connections", "9", "--scope", "project", socket=s, cwd=other)
    assert out.returncode == 1 and "--scope global" in out.stderr
    assert json.loads((other / ".claif.json").read_text()) == {"client": {"model": "echo/other"}}
    with Client(s) as c:  # (a library client started elsewhere sees the daemon's)
        assert c.config_get("pool.max_connections")["value"] == 100
