"""A newcomer's first hour, through the real CLI and daemon: model names as
people type them, prompts from words and pipes, continuing a conversation,
keys, the request log, and configuration that tells the truth."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest

from claif_client import ClaifError, Client, InvalidRequest, NotConfigured

from .conftest import ANTHROPIC_TEST_KEY, DaemonProcess, Sim, sim_env
from .test_cli import CLAIF, claif

ROOT = Path(__file__).resolve().parent.parent


def ok(*args: str, socket: Path, stdin: str | None = None, cwd: Path | None = None) -> str:
    out = claif(*args, socket=socket, stdin=stdin, cwd=cwd)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


# ------------------------------------------------------------- prompts


def test_prompt_words_pipes_and_global_options_anywhere(daemon: DaemonProcess) -> None:
    s = daemon.socket
    assert ok("ask", "what", "is", "2+2", socket=s).strip() == "echo: what is 2+2"
    assert ok("ask", socket=s, stdin="text from a pipe\n").strip() == "echo: text from a pipe"
    assert ok("ask", "-", socket=s, stdin="dash reads stdin").strip() == "echo: dash reads stdin"
    both = ok("ask", "summarize", "this", socket=s, stdin="line one\nline two\n")
    assert both.strip() == "echo: line one\nline two\n\nsummarize this"
    doc = json.loads(ok("ask", "hi", "--json", socket=s))  # --json after the subcommand
    assert doc["text"] == "echo: hi"
    out = subprocess.run([CLAIF, "status", "--json", "--socket", str(s)], capture_output=True, text=True, input="")
    assert out.returncode == 0 and json.loads(out.stdout)["pid"] > 0
    empty = claif("ask", socket=s, stdin="")
    assert empty.returncode == 2 and "no prompt" in empty.stderr


def test_model_options_reach_the_provider(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    ok("ask", "-m", "gpt-4o-mini", "-o", "temperature", "0.25", "-o", "seed", "7", "-o", "stop", "END",
       "tuned", socket=upstream_daemon.socket)
    body = sim.requests()[-1]["body"]
    assert body["model"] == "gpt-4o-mini"  # a bare id: openai by its prefix
    assert body["temperature"] == 0.25 and body["seed"] == 7 and body["stop"] == ["END"]


def test_bare_model_ids_resolve_to_their_provider(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        assert c.complete("hi", model="claude-3-5-haiku-20241022").model == "anthropic/claude-3-5-haiku-20241022"
        assert c.complete("hi", model="gpt-4o-mini").model.startswith("openai/gpt-4o-mini")
        assert c.complete("hi", model="o3-mini").model.startswith("openai/o3-mini")
        with pytest.raises(ClaifError, match="known model id"):
            c.complete("hi", model="llama-3")


def test_continue_the_last_exchange(daemon: DaemonProcess) -> None:
    s = daemon.socket
    ok("ask", "-c", "remember", "seven", socket=s)
    ok("ask", "-c", "what", "was", "it", socket=s)
    with Client(s) as c:
        sessions = c.session_list()["sessions"]
        assert len(sessions) == 1
        texts = [m["content"] for m in c.session_get(sessions[0]["id"])["messages"]]
    assert texts == ["remember seven", "echo: remember seven", "what was it", "echo: what was it"]


def test_chat_continues_the_last_exchange_under_a_terminal(daemon: DaemonProcess) -> None:
    ok("ask", "-c", "first", "turn", socket=daemon.socket)
    # On a terminal, started by subprocess: no Python runs between fork and
    # exec (a fork of this multi-threaded test process could hang there).
    fd, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIF_")}
    env["XDG_STATE_HOME"] = str(daemon.socket.parent / "state")  # (where `claif()` keeps what -c continues)
    proc = subprocess.Popen([CLAIF, "--socket", str(daemon.socket), "chat", "-c"],
                            stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    out = b""

    def read_until(marker: bytes, timeout: float = 10) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    return

    read_until(b"you> ")
    os.write(fd, b"second turn\n")
    read_until(b"echo: second turn")
    os.write(fd, b"/exit\n")
    read_until(b"saved")
    try:
        assert proc.wait(timeout=10) == 0, out
    finally:
        proc.kill()
        os.close(fd)
    with Client(daemon.socket) as c:
        sessions = c.session_list()["sessions"]
        assert len(sessions) == 1
        texts = [m["content"] for m in c.session_get(sessions[0]["id"])["messages"]]
    assert texts[-2:] == ["second turn", "echo: second turn"] and len(texts) == 4


# ------------------------------------------------------ models, log, keys


def test_models_lists_providers_and_aliases(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_MODELS__FAST="anthropic/claude-haiku-4-5"))
    out = ok("models", socket=d.socket)
    assert "anthropic/claude-sonnet-4-5" in out and "openai/gpt-4o-mini" in out
    assert "fast -> anthropic/claude-haiku-4-5" in out and "echo/default" in out
    doc = json.loads(ok("--json", "models", socket=d.socket))
    assert doc["errors"] == {}
    assert d.stop() == 0  # the factory's daemons share one socket path
    bare = daemon_factory()  # no keys: the reason is said, the rest is listed
    doc = json.loads(ok("--json", "models", socket=bare.socket))
    assert "claif keys set anthropic" in doc["errors"]["anthropic"]
    assert doc["models"] == [{"id": "echo/default", "provider": "echo"}]


def test_the_request_log_has_figures_and_content_unless_turned_off(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    s = upstream_daemon.socket
    ok("ask", "-m", "gpt-4o-mini", "a secret question", socket=s)
    ok("ask", "-m", "gpt-4o-mini", "a secret question", socket=s)
    rows = json.loads(ok("--json", "log", socket=s))
    assert [r["outcome"] for r in rows[-2:]] == ["ok", "cached-exact"]
    assert rows[-2]["model"] == "gpt-4o-mini" and rows[-2]["output_tokens"] > 0 and rows[-2]["cost_usd"] > 0
    assert rows[-1]["cost_usd"] == 0 and rows[-1]["cached"] is True
    assert rows[-1]["prompt"] == "a secret question" and rows[-1]["answer"] == "Simulated reply to: a secret question"
    text = ok("log", socket=s)
    assert "openai/gpt-4o-mini" in text and "prompt: a secret question" in text
    ok("config", "set", "log.content", "false", socket=s)
    ok("ask", "-m", "gpt-4o-mini", "another secret", socket=s)
    rows = json.loads(ok("--json", "log", socket=s))
    assert rows[-1]["output_tokens"] > 0 and "another" not in json.dumps(rows[-1])


def test_keys_set_reaches_the_running_daemon(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    sim.configure(api_keys=[ANTHROPIC_TEST_KEY])
    env = {k: v for k, v in sim_env(sim).items() if not k.endswith("_API_KEY")}
    d = daemon_factory(env=env)
    refused = claif("ask", "-m", "claude-sonnet-4-5", "hi", socket=d.socket)
    assert refused.returncode == 1 and "claif keys set anthropic" in refused.stderr
    assert "does not reach" in refused.stderr
    out = ok("keys", "set", "anthropic", socket=d.socket, stdin=ANTHROPIC_TEST_KEY + "\n")
    assert "stored the anthropic key" in out and ANTHROPIC_TEST_KEY not in out
    config = d.home / ".claif" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["providers"]["anthropic"]["api_key"] == ANTHROPIC_TEST_KEY
    assert ok("ask", "-m", "claude-sonnet-4-5", "hi", socket=d.socket).startswith("Simulated reply")
    assert "anthropic  set (global)" in ok("keys", "list", socket=d.socket)
    assert ANTHROPIC_TEST_KEY not in ok("config", "get", "providers.anthropic.api_key", socket=d.socket)


def test_not_configured_says_where_the_daemon_looks(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c, pytest.raises(NotConfigured) as info:
        c.complete("hi", model="anthropic/claude-sonnet-4-5")
    assert "ANTHROPIC_API_KEY" in info.value.message and "its own environment" in info.value.message


# ------------------------------------------------------ configuration


def test_secrets_are_found_by_name_and_shape_not_by_substring(daemon: DaemonProcess) -> None:
    s = daemon.socket
    assert ok("config", "get", "session.context.max_tokens", socket=s).startswith("100000")
    ok("config", "set", "providers.openai.api_key", "not-really-a-key", socket=s)
    assert "[redacted]" in ok("config", "get", "providers.openai.api_key", socket=s)
    ok("config", "set", "models.leaky", "sk-abcdefghijklmnop1234", socket=s)
    assert "sk-abcdef" not in ok("config", "show", socket=s)


def test_set_validates_its_own_layer_prints_what_it_wrote_and_unset(daemon: DaemonProcess) -> None:
    s = daemon.socket
    ok("config", "set", "pool.max_connections", "50", socket=s)  # runtime: hides the files below
    bad = claif("config", "set", "pool.max_connections", "abc", "--scope", "global", socket=s)
    assert bad.returncode == 1 and "max_connections" in bad.stderr
    assert not (daemon.home / ".claif" / "config.json").exists()
    # (run where the daemon runs: its own project file is the one there)
    out = ok("config", "set", "pool.max_connections", "20", "--scope", "project", socket=s, cwd=daemon.home)
    assert "wrote pool.max_connections = 20 to the project layer" in out
    assert "effective: 50 (from runtime)" in out
    out = ok("config", "unset", "pool.max_connections", socket=s)
    assert "effective: 20 (from project)" in out
    out = ok("config", "unset", "pool.max_connections", "--scope", "project", socket=s, cwd=daemon.home)
    assert "effective: 100 (from default)" in out
    assert json.loads((daemon.home / ".claif.json").read_text()) == {}
    missing = claif("config", "unset", "pool.max_connections", socket=s)
    assert missing.returncode == 1 and "does not set" in missing.stderr


def test_unknown_keys_are_warned_about_with_a_suggestion(daemon_factory, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_CLINET__MODEL": "echo/x"}, start=False)
    (d.home / ".claif").mkdir()
    (d.home / ".claif" / "config.json").write_text(json.dumps({"clinet": {"model": "echo/y"}, "cache": {"ttl": 5}}))
    d.start()
    with Client(d.socket) as c:
        warnings = c.status()["config"]["warnings"]
    assert any("'clinet.model'" in w and "did you mean 'client.model'" in w and "config.json" in w for w in warnings)
    assert any("CLAIF_CLINET__MODEL" in w and "client.model" in w for w in warnings)
    assert any("'cache.ttl'" in w and "did you mean 'cache.default_ttl'" in w for w in warnings)
    assert any(line.get("event") == "unknown config key ignored" for line in d.logs())
    bad = short_tmp / "two.json"
    bad.write_text(json.dumps({"pool": {"max_connections": "abc"}, "batch": {"concurrency": 0}, "clinet": {}}))
    out = claif("config", "validate", str(bad), socket=d.socket)
    assert out.returncode == 1
    assert "pool.max_connections" in out.stdout and "batch.concurrency" in out.stdout  # both errors
    assert "did you mean" in out.stdout


# ------------------------------------------------------ one request shape


def test_the_client_takes_the_shorthands_the_cli_takes(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        items = c.batch([{"prompt": "one"}, {"messages": [{"role": "user", "content": "two"}]},
                         {"prompt": "three", "custom_id": "x"}])
        assert [i.response.text for i in items if i.response] == ["echo: one", "echo: two", "echo: three"]
        with pytest.raises(InvalidRequest, match="request 1: unknown field"):
            c.batch([{"prompt": "fine"}, {"promt": "typo"}])
        with pytest.raises(InvalidRequest, match="request 0"):
            c.batch([{"messages": "not a list"}])
        with pytest.raises(InvalidRequest, match="unknown request field"):
            c.complete("x", temprature=0.2)
        reply = c.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "hi"}],
                                          cache="bypass")
        assert reply.choices[0].message.content == "echo: hi"


# ------------------------------------------------------ the README walk-through


def _walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its walk-through block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_walkthrough_runs_as_written(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIF_")}
    env.update(CLAIF_SOCKET=str(d.socket), PATH=f"{Path(CLAIF).parent}:{env.get('PATH', '')}", HOME=str(d.home))
    commands = _walkthrough()
    assert len(commands) >= 8
    for command in commands:
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60,
                             stdin=subprocess.DEVNULL, cwd=d.home)
        assert out.returncode == 0, (command, out.stdout, out.stderr)
