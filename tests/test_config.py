"""Configuration schema and layering, without a daemon."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from claifd.config import (
    Config,
    ConfigError,
    build_config,
    env_layer,
    merge_layers,
    parse_duration,
    parse_size,
    read_file_layer,
    unknown_keys,
)
from claifd.errors import BadRequest
from claifd.providers import resolve_model


@pytest.mark.parametrize(
    "text,expected",
    [(1024, 1024), ("100MB", 100_000_000), ("64 MiB", 64 * 1024**2), ("1.5GB", 1_500_000_000), ("12", 12), ("2k", 2048)],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", -5, True, "10 parsecs"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,expected", [(30, 30.0), ("45s", 45.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25)])
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


def test_defaults() -> None:
    c = Config()
    assert c.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert c.providers["openai"].base_url == "https://api.openai.com/v1"
    assert c.cache.max_size == 100_000_000
    assert c.batch.concurrency == 5


def test_layers_merge_key_by_key() -> None:
    merged = merge_layers(
        {"client": {"model": "echo/a", "timeout": 5}, "cache": {"default_ttl": 10}},
        {"client": {"model": "echo/b"}},
        {"cache": {"max_size": "1MB"}},
    )
    c = build_config(merged)
    assert (c.client.model, c.client.timeout, c.cache.default_ttl, c.cache.max_size) == ("echo/b", 5.0, 10.0, 1_000_000)


def test_environment_layer_converts_by_schema_type() -> None:
    env = {
        "CLAIF_POOL__MAX_CONNECTIONS": "7",
        "CLAIF_CACHE__ENABLED": "false",
        "CLAIF_CACHE__SEMANTIC__THRESHOLD": "0.9",
        "CLAIF_PROVIDERS__ANTHROPIC__BASE_URL": "http://127.0.0.1:9",
        "CLAIF_DEFAULT_MODEL": "echo/env",
        "CLAIF_TIMEOUT": "12",
        "CLAIF_SESSION_DIR": "/tmp/s",
        "CLAIF_CACHE_TTL": "2m",
        "CLAIF_LOG_LEVEL": "debug",
        "CLAIF_SOCKET": "/not/a/config/key",
        "HOME": "/x",
    }
    c = build_config(env_layer(env))
    assert c.pool.max_connections == 7
    assert c.cache.enabled is False
    assert c.cache.semantic.threshold == 0.9
    assert c.providers["anthropic"].base_url == "http://127.0.0.1:9"
    assert (c.client.model, c.client.timeout, c.session.directory) == ("echo/env", 12.0, "/tmp/s")
    assert c.cache.default_ttl == 120.0 and c.logging.level == "debug"


def test_invalid_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"pool": {"max_connections": "many"}})
    assert "max_connections" in str(info.value)


def test_file_layer_errors(tmp_path: Path) -> None:
    assert read_file_layer(tmp_path / "missing.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text('{"client": {"model": }')
    with pytest.raises(ConfigError) as info:
        read_file_layer(bad)
    assert "line 1" in str(info.value) and str(bad) in str(info.value)
    arr = tmp_path / "arr.json"
    arr.write_text("[1]")
    with pytest.raises(ConfigError):
        read_file_layer(arr)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"client": {"model": "echo/x"}}))
    assert read_file_layer(ok) == {"client": {"model": "echo/x"}}


def test_unknown_keys_are_reported() -> None:
    assert unknown_keys({"client": {"modle": 1}, "nope": 2, "models": {"a": "b"}}) == ["client.modle", "nope"]


def test_model_resolution() -> None:
    aliases = {"fast": "echo/quick", "chain": "fast"}
    assert resolve_model("anthropic/claude-sonnet-4-5", "echo/d", aliases) == ("anthropic", "claude-sonnet-4-5")
    assert resolve_model("fast", "echo/d", aliases) == ("echo", "quick")
    assert resolve_model("chain", "echo/d", aliases) == ("echo", "quick")
    assert resolve_model(None, "echo/d", aliases) == ("echo", "d")
    assert resolve_model("openai/org/model", "echo/d", {}) == ("openai", "org/model")
    with pytest.raises(BadRequest):
        resolve_model("loop", "echo/d", {"loop": "loop2", "loop2": "loop"})
    with pytest.raises(BadRequest):
        resolve_model("plain", "echo/d", {})


@pytest.mark.parametrize(("key", "value", "bound"), [
    ("cache.default_ttl", 1e12, "<= 3.1536e+08"),
    ("cache.max_ttl", 1e12, "<= 3.1536e+08"),
    ("redis.near_cache_ttl", 1e12, "<= 3.1536e+08"),
    ("providers.anthropic.default_max_tokens", 10_000_000, "<= 200000"),
    ("optimizer.max_tokens.complex", 10_000_000, "<= 200000"),
])
def test_values_past_what_the_backends_and_apis_take_are_refused_naming_the_range(key: str, value: float,
                                                                                   bound: str) -> None:
    doc: dict[str, object] = {}
    node = doc
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})  # type: ignore[assignment]
    node[leaf] = value
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be {bound}")):
        build_config(doc)
