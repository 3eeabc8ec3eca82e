"""The live configuration without a daemon: layers, reloads, callbacks, set."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claifd.config import ConfigError, describe_schema
from claifd.config_manager import LAYERS, SECRET_MARK, Change, ConfigManager

ROOT = Path(__file__).resolve().parent.parent


def manager(tmp_path: Path, env: dict[str, str] | None = None) -> ConfigManager:
    m = ConfigManager(tmp_path / "global.json", tmp_path / "project.json", env or {})
    m.load()
    return m


def write(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


@pytest.mark.parametrize("present", list(itertools.product([False, True], repeat=4)))
def test_precedence_matrix(tmp_path: Path, present: tuple[bool, bool, bool, bool]) -> None:
    """Every combination of the four non-default layers setting the same key."""
    in_global, in_project, in_env, in_runtime = present
    if in_global:
        write(tmp_path / "global.json", {"client": {"model": "echo/global"}})
    if in_project:
        write(tmp_path / "project.json", {"client": {"model": "echo/project"}})
    env = {"CLAIF_CLIENT__MODEL": "echo/env"} if in_env else {}
    m = manager(tmp_path, env)
    if in_runtime:
        m.set_runtime("client.model", "echo/runtime")
    winner = "default"
    for layer, there in zip(LAYERS[1:], present):
        if there:
            winner = layer
    expected = "echo/default" if winner == "default" else f"echo/{winner}"
    assert m.config.client.model == expected
    assert m.get("client.model") == (expected, winner)


def test_layers_merge_key_by_key_across_sections(tmp_path: Path) -> None:
    write(tmp_path / "global.json", {"pool": {"max_connections": 10, "max_keepalive": 5}})
    write(tmp_path / "project.json", {"pool": {"max_connections": 20}})
    m = manager(tmp_path, {"CLAIF_POOL__CONNECT_TIMEOUT": "3s"})
    assert m.get("pool.max_connections") == (20, "project")
    assert m.get("pool.max_keepalive") == (5, "global")
    assert m.get("pool.connect_timeout") == (3.0, "env")
    assert m.get("pool.read_timeout") == (600.0, "default")
    with pytest.raises(KeyError):
        m.get("pool.nope")


def test_environment_aliases_and_conversion(tmp_path: Path) -> None:
    m = manager(tmp_path, {
        "CLAIF_DEFAULT_MODEL": "echo/alias", "CLAIF_TIMEOUT": "5m", "CLAIF_SESSION_DIR": "/s",
        "CLAIF_CACHE_TTL": "90", "CLAIF_LOG_LEVEL": "debug", "CLAIF_CACHE__ENABLED": "false",
        "CLAIF_CACHE__MAX_SIZE": "2MB", "CLAIF_BATCH__CONCURRENCY": "9",
    })
    c = m.config
    assert (c.client.model, c.client.timeout, c.session.directory) == ("echo/alias", 300.0, "/s")
    assert (c.cache.default_ttl, c.logging.level, c.cache.enabled, c.cache.max_size) == (90.0, "debug", False, 2_000_000)
    assert c.batch.concurrency == 9


def test_invalid_start_names_the_layer(tmp_path: Path) -> None:
    write(tmp_path / "project.json", {"pool": {"max_connections": "many"}})
    m = ConfigManager(tmp_path / "global.json", tmp_path / "project.json", {})
    with pytest.raises(ConfigError) as info:
        m.load()
    assert "project.json" in str(info.value) and "max_connections" in str(info.value)


@pytest.mark.parametrize(
    "bad,expect",
    [
        ('{"pool": {"max_connections": 5', "line 1"),  # half-written
        ('{"pool": {"max_connections": 5,}}', "line 1 column"),  # syntax
        ('{"pool": {"max_connections": "five"}}', "$.pool.max_connections"),  # type
        ('{"cache": {"strategy": "yolo"}}', "$.cache.strategy"),  # enum
        ('[1, 2]', "JSON object"),
    ],
)
def test_invalid_edit_keeps_the_last_good_config(tmp_path: Path, bad: str, expect: str) -> None:
    write(tmp_path / "global.json", {"pool": {"max_connections": 5}})
    m = manager(tmp_path)
    fired: list[list[Change]] = []
    m.register_callback("*", lambda old, new, changes: fired.append(changes))
    write(tmp_path / "global.json", bad)
    with capture_logs() as logs:
        assert m.reload("test") == []
    assert m.config.pool.max_connections == 5 and m.generation == 1
    assert m.last_error is not None and expect in m.last_error
    global_source = next(s for s in m.sources_info() if s["layer"] == "global")
    assert global_source["error"] and str(tmp_path / "global.json") in global_source["error"]
    assert any(e["event"].startswith("config rejected") and e["log_level"] == "error" for e in logs)
    assert not fired
    # A good edit clears the error and applies.
    write(tmp_path / "global.json", {"pool": {"max_connections": 6}})
    assert [c.key for c in m.reload("test")] == ["pool.max_connections"]
    assert m.last_error is None and m.generation == 2
    assert next(s for s in m.sources_info() if s["layer"] == "global")["error"] is None


def test_deleting_a_file_removes_its_layer(tmp_path: Path) -> None:
    write(tmp_path / "project.json", {"batch": {"concurrency": 9}})
    m = manager(tmp_path)
    assert m.config.batch.concurrency == 9
    (tmp_path / "project.json").unlink()
    assert [c.key for c in m.reload()] == ["batch.concurrency"]
    assert m.get("batch.concurrency") == (5, "default")
    source = next(s for s in m.sources_info() if s["layer"] == "project")
    assert (source["exists"], source["loaded"], source["error"]) == (False, False, None)


def test_callbacks_fire_once_per_change_with_their_matching_keys(tmp_path: Path) -> None:
    m = manager(tmp_path)
    calls: dict[str, list[list[str]]] = {"pool": [], "level": [], "all": [], "never": []}
    m.register_callback("pool.*", lambda o, n, ch: calls["pool"].append([c.key for c in ch]))
    m.register_callback("logging.level", lambda o, n, ch: calls["level"].append([c.key for c in ch]))
    m.register_callback("*", lambda o, n, ch: calls["all"].append([c.key for c in ch]))
    m.register_callback("session.*", lambda o, n, ch: calls["never"].append([c.key for c in ch]))
    write(tmp_path / "global.json", {"pool": {"max_connections": 7, "max_keepalive": 3}, "logging": {"level": "debug"}})
    m.reload()
    assert calls["pool"] == [["pool.max_connections", "pool.max_keepalive"]]
    assert calls["level"] == [["logging.level"]]
    assert calls["all"] == [["logging.level", "pool.max_connections", "pool.max_keepalive"]]
    assert calls["never"] == []
    m.reload()  # nothing changed: nothing fires, generation stays
    assert len(calls["all"]) == 1 and m.generation == 2


def test_attached_components_get_their_own_section_after_each_change(tmp_path: Path) -> None:
    m = manager(tmp_path)
    got: dict[str, list[Any]] = {"pool": [], "openai": [], "all": [], "session": []}
    m.attach("pool", got["pool"].append)
    m.attach("providers.openai", got["openai"].append)
    m.attach("", got["all"].append)
    m.attach("session", got["session"].append)
    write(tmp_path / "global.json", {"pool": {"max_connections": 7}, "providers": {"openai": {"max_concurrency": 3}}})
    m.reload()
    assert [p.max_connections for p in got["pool"]] == [7]
    assert [p.max_concurrency for p in got["openai"]] == [3]
    assert got["all"] == [m.config] and got["session"] == []
    m.reload()  # nothing changed: nobody is called
    assert len(got["all"]) == 1


def test_a_failing_callback_does_not_stop_the_others(tmp_path: Path) -> None:
    m = manager(tmp_path)
    seen: list[Any] = []

    def boom(old: Any, new: Any, changes: list[Change]) -> None:
        raise RuntimeError("boom")

    m.register_callback("*", boom)
    m.register_callback("*", lambda o, n, ch: seen.append((o.batch.concurrency, n.batch.concurrency, ch[0].kind)))
    with capture_logs() as logs:
        m.set_runtime("batch.concurrency", 8)
    assert seen == [(5, 8, "changed")]
    assert any(e["event"] == "config callback failed" for e in logs)


def test_change_kinds(tmp_path: Path) -> None:
    m = manager(tmp_path)
    added = m.set_runtime("models", {"fast": "echo/f"})
    assert [(c.key, c.kind, c.new) for c in added] == [("models.fast", "added", "echo/f")]
    removed = m.set_runtime("models", {})
    assert [(c.key, c.kind, c.old) for c in removed] == [("models.fast", "removed", "echo/f")]


def test_set_in_files_keeps_other_keys_and_validates_first(tmp_path: Path) -> None:
    write(tmp_path / "project.json", {"client": {"model": "echo/p"}, "custom_comment": "kept"})
    m = manager(tmp_path)
    layer = m.write_file_setting("project", "pool.max_connections", 33)
    changes = m.adopt_layer("project", layer)
    assert [c.key for c in changes] == ["pool.max_connections"]
    on_disk = json.loads((tmp_path / "project.json").read_text())
    assert on_disk == {"client": {"model": "echo/p"}, "custom_comment": "kept", "pool": {"max_connections": 33}}
    assert (tmp_path / "project.json").stat().st_mode & 0o777 == 0o600
    assert m.reload() == [], "re-reading our own write changes nothing"
    before = (tmp_path / "project.json").read_text()
    for key, value in [("pool.max_connections", "lots"), ("pool.nope", 1), ("cache.strategy", "wild")]:
        with pytest.raises(ConfigError):
            m.write_file_setting("project", key, value)
    assert (tmp_path / "project.json").read_text() == before, "a rejected set writes nothing"
    # The global file is created when missing.
    m.adopt_layer("global", m.write_file_setting("global", "batch.concurrency", 2))
    assert json.loads((tmp_path / "global.json").read_text()) == {"batch": {"concurrency": 2}}


def test_set_refuses_a_broken_file(tmp_path: Path) -> None:
    m = manager(tmp_path)
    write(tmp_path / "global.json", "{ broken")
    with pytest.raises(ConfigError):
        m.write_file_setting("global", "batch.concurrency", 2)
    assert (tmp_path / "global.json").read_text() == "{ broken"


def test_secrets_are_redacted(tmp_path: Path) -> None:
    write(tmp_path / "global.json", {"providers": {"openai": {"api_key": "sk-very-secret"}}})
    m = manager(tmp_path)
    assert m.config.providers["openai"].api_key == "sk-very-secret"
    assert m.get("providers.openai.api_key") == (SECRET_MARK, "global")
    assert m.get("providers.anthropic.api_key") == (None, "default")
    assert "sk-very-secret" not in json.dumps(m.show())
    assert m.get("providers.openai")[0]["api_key"] == SECRET_MARK
    with capture_logs() as logs:
        m.set_runtime("providers.openai.api_key", "sk-other-secret")
    assert "sk-other-secret" not in repr(logs)


def test_unknown_keys_are_warnings_not_errors(tmp_path: Path) -> None:
    write(tmp_path / "global.json", {"pool": {"max_conections": 5}, "nonsense": 1})
    with capture_logs() as logs:
        m = manager(tmp_path)
    warned = {e["key"] for e in logs if e["event"] == "unknown config key ignored"}
    assert warned == {"pool.max_conections", "nonsense"}
    assert next(s for s in m.sources_info() if s["layer"] == "global")["unknown_keys"] == ["pool.max_conections", "nonsense"]


def test_validate_text(tmp_path: Path) -> None:
    m = manager(tmp_path)
    assert m.validate_text('{"pool": {"max_connections": 3}}')["ok"] is True
    bad = m.validate_text('{"pool": {"max_connections": "x"}}', "f.json")
    assert bad["ok"] is False and "max_connections" in bad["error"]
    assert m.validate_text("{oops", "f.json")["error"].startswith("f.json: invalid JSON at line 1")
    assert m.validate_text('{"zzz": 1}')["unknown_keys"] == ["zzz"]
    assert m.config.pool.max_connections == 100, "validating applies nothing"


def test_the_configuration_doc_lists_every_key() -> None:
    """docs/CONFIGURATION.md and the schema agree: keys, types, defaults."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| `([^`]*)` \| (live|restart) \|", text, re.M)
    documented = [(key, kind.strip(), json.loads(default)) for key, kind, default, _ in rows]
    assert documented == describe_schema()
