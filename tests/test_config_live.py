"""Live configuration through the real daemon: watched files, the config
commands, and callbacks that really retune the running daemon."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from claif_client import AsyncClient, BadRequest, Client, NotConfigured, NotFound

from .conftest import DaemonProcess, Sim, eventually, sim_env, start_sim
from .test_cli import claif

OPENAI = "openai/gpt-4o-mini"


def global_file(d: DaemonProcess) -> Path:
    return d.home / ".claif" / "config.json"


def project_file(d: DaemonProcess) -> Path:
    return d.home / ".claif.json"


def save_by_rename(path: Path, doc: Any) -> None:
    """What editors do: write a temp file beside it, then rename it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def wait_value(c: Client, key: str, expected: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = c.config_get(key)
        if doc["value"] == expected:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} is still {doc['value']!r}, expected {expected!r}")
        time.sleep(0.02)


def wait_error(c: Client, timeout: float = 5.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        err = c.config_sources()["last_error"]
        if err:
            return err  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError("no config error was reported")
        time.sleep(0.02)


def test_watched_files_save_by_rename_delete_and_recreate(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        assert c.config_get("batch.concurrency") == {"key": "batch.concurrency", "value": 5, "source": "default"}
        generation = c.status()["config"]["generation"]
        save_by_rename(global_file(daemon), {"batch": {"concurrency": 7}})
        assert wait_value(c, "batch.concurrency", 7)["source"] == "global"
        assert c.status()["config"]["generation"] == generation + 1
        # The project file appears after start-up, written in place this time.
        project_file(daemon).write_text(json.dumps({"batch": {"concurrency": 8}}))
        assert wait_value(c, "batch.concurrency", 8)["source"] == "project"
        project_file(daemon).unlink()
        assert wait_value(c, "batch.concurrency", 7)["source"] == "global"
        global_file(daemon).unlink()
        assert wait_value(c, "batch.concurrency", 5)["source"] == "default"
        save_by_rename(global_file(daemon), {"batch": {"concurrency": 9}})
        assert wait_value(c, "batch.concurrency", 9)["source"] == "global"
        assert c.status()["config"]["generation"] == generation + 5


@pytest.mark.parametrize(
    "bad", ['{"batch": {"concurrency": 3', '{"batch": {"concurrency": "three"}}', '{"logging": {"level": "loud"}}']
)
def test_invalid_edit_keeps_serving_and_shows_the_error(daemon: DaemonProcess, bad: str) -> None:
    with Client(daemon.socket) as c:
        save_by_rename(global_file(daemon), {"batch": {"concurrency": 4}})
        wait_value(c, "batch.concurrency", 4)
        generation = c.status()["config"]["generation"]
        save_by_rename(global_file(daemon), bad)
        error = wait_error(c)
        assert error and "config.json" in error
        assert c.config_get("batch.concurrency")["value"] == 4
        assert c.status()["config"]["last_error"] == error
        assert c.status()["config"]["generation"] == generation
        assert c.complete("still serving").text == "echo: still serving"
        sources = c.config_sources()["sources"]
        assert next(s for s in sources if s["layer"] == "global")["error"]
        save_by_rename(global_file(daemon), {"batch": {"concurrency": 6}})
        wait_value(c, "batch.concurrency", 6)
        assert c.status()["config"]["last_error"] is None
    assert any(line.get("event") == "config rejected; keeping the last good configuration" for line in daemon.logs())


def test_sighup_and_reload_command(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # The project file's directory does not exist at start-up, so nothing
    # watches it: only SIGHUP (or `config reload`) can bring its edits in.
    d = daemon_factory(args=["--project-config", "later/p.json"])
    later = d.home / "later"
    with Client(d.socket) as c:
        later.mkdir()
        (later / "p.json").write_text(json.dumps({"batch": {"concurrency": 3}}))
        d.signal(signal.SIGHUP)
        assert wait_value(c, "batch.concurrency", 3)["source"] == "project"
        result = c.config_reload()
        assert result["error"] is None and result["changed"] == []
        (later / "p.json").write_text(json.dumps({"batch": {"concurrency": 4}}))
        result = c.config_reload()
        assert result["error"] is None and result["changed"] == ["batch.concurrency"]
        assert c.config_get("batch.concurrency")["value"] == 4
    assert d.stop() == 0


def test_config_commands_over_the_cli(daemon: DaemonProcess, short_tmp: Path) -> None:
    s = daemon.socket
    out = claif("--json", "config", "get", "pool.max_connections", socket=s)
    assert json.loads(out.stdout) == {"key": "pool.max_connections", "value": 100, "source": "default"}
    assert claif("config", "set", "pool.max_connections", "60", socket=s).returncode == 0
    assert json.loads(claif("--json", "config", "get", "pool.max_connections", socket=s).stdout)["source"] == "runtime"
    out = claif("config", "set", "cache.max_size", "50MB", "--scope", "project", socket=s, cwd=daemon.home)
    assert out.returncode == 0, out.stderr
    assert json.loads(project_file(daemon).read_text()) == {"cache": {"max_size": "50MB"}}
    out = claif("config", "set", "client.model", "echo/g", "--scope", "global", socket=s)
    assert out.returncode == 0 and json.loads(global_file(daemon).read_text()) == {"client": {"model": "echo/g"}}
    bad = claif("config", "set", "pool.max_connections", "lots", socket=s)
    assert bad.returncode == 1 and bad.stderr.startswith("claif: BadRequest: config not changed")
    assert claif("config", "set", "pool.bogus", "1", socket=s).returncode == 1
    assert claif("config", "get", "no.such.key", socket=s).returncode == 1
    show = json.loads(claif("--json", "config", "show", socket=s).stdout)
    assert show["pool"]["max_connections"] == 60 and show["client"]["model"] == "echo/g"
    sources = json.loads(claif("--json", "config", "sources", socket=s).stdout)
    assert [x["layer"] for x in sources["sources"]] == ["default", "global", "project", "env", "runtime"]
    assert "loaded" in claif("config", "sources", socket=s).stdout
    good = short_tmp / "good.json"
    good.write_text(json.dumps({"pool": {"max_connections": 5}, "typo_key": 1}))
    out = claif("config", "validate", str(good), socket=s)
    assert out.returncode == 0 and "valid" in out.stdout and "typo_key" in out.stdout
    badf = short_tmp / "bad.json"
    badf.write_text('{"pool": {"max_connections": "x"}}')
    out = claif("config", "validate", str(badf), socket=s)
    assert out.returncode == 1 and "max_connections" in out.stdout
    reload = json.loads(claif("--json", "config", "reload", socket=s).stdout)
    assert reload["error"] is None


def test_secrets_never_leave_the_daemon(daemon: DaemonProcess) -> None:
    secret = "sk-live-config-SECRET-42"
    with Client(daemon.socket) as c:
        result = c.config_set("providers.openai.api_key", secret)
        assert result["value"] == "[redacted]"
        assert c.config_get("providers.openai.api_key")["value"] == "[redacted]"
        assert secret not in json.dumps(c.config_show())
        c.config_set("providers.anthropic.api_key", secret, scope="global")
        assert secret not in json.dumps(c.config_sources())
    assert daemon.stop() == 0
    assert secret not in daemon.log_path.read_text()
    assert global_file(daemon).stat().st_mode & 0o777 == 0o600
    daemon.start()


def test_logging_level_applies_at_once(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        c.ping()
        assert not any(line.get("level") == "debug" for line in daemon.logs())
        c.config_set("logging.level", "debug")
    with Client(daemon.socket) as c2:  # a new connection logs "client connected" at debug
        c2.ping()
    assert eventually(lambda: any(line.get("event") == "client connected" for line in daemon.logs()))


def test_provider_base_url_and_key_apply_live(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    env = sim_env(sim)
    del env["OPENAI_API_KEY"]
    d = daemon_factory(env=env)
    other = start_sim()
    try:
        with Client(d.socket) as c:
            with pytest.raises(NotConfigured):
                c.complete("x", model=OPENAI)
            c.config_set("providers.openai.api_key", "sk-live")
            assert c.complete("first", model=OPENAI, cache=False).text == "Simulated reply to: first"
            assert sim.stats()["requests"] == 1
            c.config_set("providers.openai.base_url", other.url + "/v1")
            assert c.complete("second", model=OPENAI, cache=False).text == "Simulated reply to: second"
            assert other.stats()["requests"] == 1 and sim.stats()["requests"] == 1
    finally:
        other.http.close()
        other.proc.terminate()
        other.proc.wait()
    assert d.stop() == 0


def test_provider_concurrency_and_batch_concurrency_apply_live(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(latency_ms=100)
    with Client(upstream_daemon.socket) as c:
        c.config_set("batch.concurrency", 3)
        c.batch([{"messages": [{"role": "user", "content": f"b{i}"}], "model": OPENAI} for i in range(9)])
        assert sim.stats()["peak_concurrency"] == 3
        sim.reset()
        sim.configure(latency_ms=100)
        c.config_set("providers.openai.max_concurrency", 2)
        c.batch([{"messages": [{"role": "user", "content": f"c{i}"}], "model": OPENAI} for i in range(6)], concurrency=6)
        assert sim.stats()["peak_concurrency"] == 2
        assert c.status()["providers"]["openai"]["max_concurrency"] == 2


def test_cache_budget_shrink_evicts_at_once(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        for i in range(20):
            c.complete(f"fill {i} " + "x " * 50, model=OPENAI)
        before = c.cache_stats()["memory"]
        assert before["entries"] == 20
        c.config_set("cache.memory_max_bytes", before["bytes"] // 4)
        after = c.cache_stats()["memory"]
        assert after["bytes"] <= before["bytes"] // 4 and after["entries"] < 20 and after["evictions"] > 0
        c.config_set("cache.max_size", 1000)
        deadline = time.monotonic() + 5
        while c.cache_stats()["disk"]["bytes"] > 1000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.cache_stats()["disk"]["bytes"] <= 1000


def test_shorter_ttl_applies_to_stored_answers(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("ttl me", model=OPENAI)
        assert c.complete("ttl me", model=OPENAI).cached == "exact"
        c.config_set("cache.default_ttl", 0.2)
        time.sleep(0.3)
        assert c.complete("ttl me", model=OPENAI).cached is False
        c.config_set("cache.enabled", False)
        assert c.complete("ttl me", model=OPENAI).cached is False
        with pytest.raises(NotFound):
            c.complete("ttl me", model=OPENAI, cache="only")


def test_pool_swap_under_100_concurrent_requests_fails_none(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(hold=True)  # every request waits upstream (or for a slot) until the swap is done
    results: list[str] = []
    errors: list[BaseException] = []

    async def main() -> None:
        async with AsyncClient(upstream_daemon.socket) as c:

            async def one(i: int) -> None:
                try:
                    model = OPENAI if i % 2 else "anthropic/claude-sonnet-4-5"
                    results.append((await c.complete(f"swap {i}", model=model)).text)
                except BaseException as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
                with anyio.fail_after(10):
                    while (await c.status())["in_flight"] < 100:  # all 100 in flight on the old pool
                        await anyio.sleep(0.01)
                await c.config_set("pool.max_connections", 40)
                await c.config_set("pool.read_timeout", 120)
                await anyio.to_thread.run_sync(lambda: sim.http.post("/_sim/release").raise_for_status())
            status = await c.status()
            assert status["pool"]["generation"] == 3 and status["pool"]["max_connections"] == 40

    anyio.run(main)
    assert not errors, errors[:3]
    assert sorted(results) == sorted(f"Simulated reply to: swap {i}" for i in range(100))
    # The retired connections close once their requests are done.
    stats = sim.wait_for(lambda s: s["connections_open"] <= 40, timeout=5)
    assert stats["connections_open"] <= 40
    with Client(upstream_daemon.socket) as c:
        assert c.complete("after the swap", model=OPENAI).text == "Simulated reply to: after the swap"


def test_rejected_set_over_the_api_changes_nothing(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        generation = c.status()["config"]["generation"]
        with pytest.raises(BadRequest):
            c.config_set("server.drain_timeout", "forever")
        with pytest.raises(BadRequest):
            c.config_set("batch.concurrency", 2, scope="nowhere")
        assert c.status()["config"]["generation"] == generation
