"""Loading the configuration: each layer read (files, the environment),
merged key by key, validated whole into `Config`, its ranges checked."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import stat
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from .quantities import ByteSize, Duration, _dec_hook, _enc_hook
from .schema import Config, SemanticCacheConfig


class ConfigError(Exception):
    """A layer cannot be read or the merged configuration is invalid."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.message = message


# --------------------------------------------------------------------------
# Layers.


def default_global_path() -> Path:
    return Path(os.environ.get("HOME") or Path.home()) / ".claif" / "config.json"


# A configuration is a few KiB; anything far larger is a mistake (or an
# attack) that must not stall the daemon while it reads and parses it.
MAX_CONFIG_BYTES = 1024 * 1024


def read_file_layer(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist.

    Only a regular file is read (a FIFO, a device or /dev/zero behind a
    symlink is refused without blocking), at most MAX_CONFIG_BYTES of it.
    Every way the content can be wrong is a `ConfigError`, never another
    exception: a config edit must not take the daemon down.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("not a regular file (a FIFO, device or directory is not read)", source=str(path))
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"too large ({info.st_size} bytes; the limit is {MAX_CONFIG_BYTES})", source=str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"too large (over {MAX_CONFIG_BYTES} bytes)", source=str(path))
    return parse_config_text(raw, str(path))


def parse_config_text(raw: bytes | str, source: str) -> dict[str, Any]:
    """A config file's content as a dict, or `ConfigError` saying what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                              source=source) from exc
    else:
        text = raw
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=source) from exc
    except RecursionError as exc:
        raise ConfigError("JSON nested too deeply", source=source) from exc
    except ValueError as exc:  # e.g. an integer literal with too many digits
        raise ConfigError(f"invalid JSON: {exc}", source=source) from exc
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a JSON object", source=source)
    if config_depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", source=source)
    return data


# The schema is 4 levels deep; a little room for maps of objects in values.
MAX_CONFIG_DEPTH = 16


def config_depth(value: Any) -> int:
    """How deeply `value` nests (iteratively: a deep document must not overflow the stack)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_CONFIG_DEPTH:
                break
        if isinstance(node, dict):
            todo.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, depth + 1) for v in node)
    return deepest


ENV_ALIASES = {
    "CLAIF_DEFAULT_MODEL": ("client", "model"),
    "CLAIF_TIMEOUT": ("client", "timeout"),
    "CLAIF_SESSION_DIR": ("session", "directory"),
    "CLAIF_CACHE_TTL": ("cache", "default_ttl"),
    "CLAIF_LOG_LEVEL": ("logging", "level"),
}


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`CLAIF_<SECTION>__<KEY>` variables and the documented aliases, as a layer.

    Values stay strings here; `build_config` converts them by the schema's type.
    Variables without a double underscore (CLAIF_SOCKET...) are not config keys.
    """
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if name in ENV_ALIASES:
            path: tuple[str, ...] = ENV_ALIASES[name]
        elif name.startswith("CLAIF_") and "__" in name:
            path = tuple(part.lower() for part in name[len("CLAIF_") :].split("__"))
            if not all(path):
                continue
        else:
            continue
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return layer


def merge_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts; later layers win key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        _merge_into(merged, layer)
    return merged


def _merge_into(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value)
        elif isinstance(value, Mapping):
            dst[key] = {}
            _merge_into(dst[key], value)
        else:
            dst[key] = value


def unknown_keys(data: Mapping[str, Any], schema: type[msgspec.Struct] = Config, prefix: str = "") -> list[str]:
    """Dotted names in `data` that the schema does not know."""
    fields = {f.name: f.type for f in msgspec.structs.fields(schema)}
    unknown: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            unknown.append(dotted)
            continue
        sub = fields[key]
        if _is_struct(sub) and isinstance(value, Mapping):
            unknown.extend(unknown_keys(value, sub, dotted + "."))
        elif (item := struct_of_map(sub)) is not None and isinstance(value, Mapping):
            for name, entry in value.items():  # a map of sections (providers.NAME)
                if isinstance(entry, Mapping):
                    unknown.extend(unknown_keys(entry, item, f"{dotted}.{name}."))
    return unknown


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def struct_of_map(tp: Any) -> Any:
    """The section type of a map of sections (`dict[str, ProviderConfig]`), else None."""
    if getattr(tp, "__origin__", None) is dict and _is_struct(tp.__args__[1]):
        return tp.__args__[1]
    return None


# Values outside these bounds would stall or break the daemon (a limit of 0
# never admits a request, a NaN TTL poisons a disk write). Inclusive bounds;
# None: unbounded on that side. Every numeric key is listed (a test checks).
_TEN_YEARS = 10 * 365 * 86400

RANGES: dict[str, tuple[float | None, float | None]] = {
    "client.timeout": (0.001, None),
    "log.max_entries": (1, 100_000_000),
    "log.max_age": (1, 10 * 365 * 86400),
    "providers.*.max_concurrency": (1, 100_000),
    # What the APIs accept for max_tokens (Claude's largest output is 128k).
    "providers.*.default_max_tokens": (1, 200_000),
    "providers.*.timeout": (0.001, None),
    "providers.*.circuit_failures": (1, 1_000_000),
    "providers.*.circuit_cooldown": (0, None),
    "pool.max_connections": (1, 100_000),
    "pool.max_keepalive": (0, 100_000),
    "pool.keepalive_expiry": (0, None),
    "pool.connect_timeout": (0.001, None),
    "pool.read_timeout": (0.001, None),
    "pool.write_timeout": (0.001, None),
    "pool.pool_timeout": (0.001, None),
    "pool.answer_timeout": (0.001, None),
    # At least a mebibyte: no provider's answer is smaller than that limit.
    "pool.max_response_bytes": (1024 * 1024, None),
    "retry.max_attempts": (1, 100),
    "retry.base_delay": (0, None),
    "retry.max_delay": (0, None),
    "retry.deadline": (0.001, None),
    "cache.semantic.threshold": (0.0, 1.0),
    # TTLs go to Redis as milliseconds (PX) and to SQLite as REAL seconds:
    # ten years keeps both far from overflow.
    "cache.default_ttl": (0, _TEN_YEARS),
    "cache.max_ttl": (0, _TEN_YEARS),
    "cache.max_size": (0, None),
    "cache.memory_max_bytes": (0, None),
    "cache.max_entry_bytes": (1024, None),
    "redis.max_connections": (1, 10_000),
    "redis.timeout": (0.001, None),
    "redis.near_cache_ttl": (0, _TEN_YEARS),
    "redis.lock_ttl": (0.1, 86400),
    "prices.*.input": (0, None),
    "prices.*.output": (0, None),
    "prices.*.cache_write": (0, None),
    "prices.*.cache_read": (0, None),
    "budgets.daily_usd": (0, None),
    "budgets.monthly_usd": (0, None),
    "budgets.warn_at": (0.01, 1.0),
    "budgets.providers.*.daily_usd": (0, None),
    "budgets.providers.*.monthly_usd": (0, None),
    "budgets.models.*.daily_usd": (0, None),
    "budgets.models.*.monthly_usd": (0, None),
    "budgets.namespaces.*.daily_usd": (0, None),
    "budgets.namespaces.*.monthly_usd": (0, None),
    "session.memory_budget": (0, None),
    "session.context.max_tokens": (1, None),
    "session.context.recent": (1, None),
    "auto.short_chars": (0, None),
    "optimizer.max_tokens.simple": (0, 200_000),
    "optimizer.max_tokens.moderate": (0, 200_000),
    "optimizer.max_tokens.complex": (0, 200_000),
    "optimizer.context_windows.*": (1, 100_000_000),
    "auto.long_chars": (0, None),
    "batch.concurrency": (1, 10_000),
    "server.drain_timeout": (0, None),
    "server.max_in_flight_per_connection": (1, 1_000_000),
    "server.frame_timeout": (0.001, None),
    "server.http.header_timeout": (0.01, 3600),
    "server.http.max_connections": (1, 1_000_000),
    "server.http.max_buffered": (1024 * 1024, None),
    "server.allowed_uids": (0, 2**32 - 1),
    "health.interval": (0.1, 86400),
    "health.timeout": (0.01, 600),
    "health.provider_latency_warning": (0, None),
    "health.failure_window": (1, 86400),
    "health.disk_warning_free": (0, None),
    "health.disk_critical_free": (0, None),
    "health.memory_warning_available": (0, None),
    "health.memory_critical_available": (0, None),
    "health.rss_headroom": (0, None),
}


def check_ranges(config: Config) -> list[str]:
    """Every value of `config` outside its range (or not finite), as messages."""
    flat = _flatten_numbers(to_builtins(config))
    problems = []
    for key, value in flat:
        parts = key.split(".")
        bounds = RANGES.get(key)
        if bounds is None and len(parts) == 3:
            bounds = RANGES.get(f"{parts[0]}.*.{parts[2]}")
        elif bounds is None and len(parts) == 4:
            bounds = RANGES.get(f"{parts[0]}.{parts[1]}.*.{parts[3]}")
        if not math.isfinite(value):
            problems.append(f"{key} must be a finite number, got {value!r}")
            continue
        if bounds is None:
            continue
        low, high = bounds
        if low is not None and value < low:
            problems.append(f"{key} must be >= {low:g}, got {value!r}")
        elif high is not None and value > high:
            problems.append(f"{key} must be <= {high:g}, got {value!r}")
    return problems


def _flatten_numbers(doc: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) for every number in `doc`, list items under their list's key."""
    out: list[tuple[str, float]] = []
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten_numbers(v, key + "."))
        else:
            out.extend((key, x) for x in (v if isinstance(v, list) else [v])
                       if isinstance(x, (int, float)) and not isinstance(x, bool))
    return out


def _embedder_problems(semantic: SemanticCacheConfig) -> list[str]:
    """An embedder that cannot load is an invalid configuration (caught by
    `config set` and reloads), not a semantic tier that silently never hits."""
    if semantic.embedder == "wordllama" and importlib.util.find_spec("wordllama") is None:
        return ["cache.semantic.embedder 'wordllama' needs the wordllama package: pip install 'claifd[semantic]'"]
    if semantic.embedder == "openai" and not semantic.model:
        return ["cache.semantic.embedder 'openai' needs cache.semantic.model (an embeddings model)"]
    return []


def _choices_of(message: str) -> str:
    """ " (one of: zlib, zstd, none)" for msgspec's "Invalid enum value ... - at `$.cache.compression`"."""
    found = re.match(r"Invalid enum value .* - at `\$\.([\w.]+)`", message)
    if found is None:
        return ""
    schema: Any = Config
    for part in found.group(1).split("."):
        if (item := struct_of_map(schema)) is not None:
            schema = item  # providers.NAME: the name, then its section
            continue
        fields = {f.name: f.type for f in msgspec.structs.fields(schema)} if isinstance(schema, type) and \
            issubclass(schema, msgspec.Struct) else {}
        if part not in fields:
            return ""
        schema = fields[part]
    choices = [str(c) for c in typing.get_args(schema) if isinstance(c, str)]
    return f" (one of: {', '.join(choices)})" if choices else ""


def build_config(merged: Mapping[str, Any]) -> Config:
    """Validate a merged layer dict into a `Config`, or raise `ConfigError`
    (naming every value that is out of range, not only the first)."""
    try:
        config = msgspec.convert(merged, Config, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc) + _choices_of(str(exc))) from exc
    problems = check_ranges(config)
    problems.extend(_embedder_problems(config.cache.semantic))
    from ..providers.registry import check  # the provider types live with their code

    problems.extend(check(config))
    for sentinel in config.redis.sentinels:
        host, sep, port = sentinel.rpartition(":")
        if not sep or not host or not port.isdigit():
            problems.append(f"redis.sentinels entries must be HOST:PORT, got {sentinel!r}")
    for key, listen in (("metrics.listen", config.metrics.listen), ("server.http.listen", config.server.http.listen)):
        if listen:
            host, sep, port = listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                problems.append(f"{key} must be HOST:PORT (e.g. 127.0.0.1:9464), got {listen!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _type_label(tp: Any) -> str:
    if tp is ByteSize:
        return "size"
    if tp is Duration:
        return "duration"
    origin = getattr(tp, "__origin__", None)
    if origin is Literal:
        return "one of " + ", ".join(tp.__args__)
    if origin is dict:
        return "map"
    if origin is list:
        return "list"
    args = getattr(tp, "__args__", None)
    if args and type(None) in args:
        return _type_label(next(a for a in args if a is not type(None))) + " or null"
    return getattr(tp, "__name__", str(tp))


def describe_schema(schema: type[msgspec.Struct] = Config, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, type label, default) for every key, in schema order:
    docs/CONFIGURATION.md lists exactly these (a test checks)."""
    defaults = to_builtins(Config()) if schema is Config else to_builtins(schema())
    rows: list[tuple[str, str, Any]] = []
    for f in msgspec.structs.fields(schema):
        key = prefix + f.name
        if _is_struct(f.type):
            rows.extend(describe_schema(f.type, key + "."))
            continue
        if (item := struct_of_map(f.type)) is not None:  # providers.NAME.*: each key with its own default
            rows.extend((f"{key}.NAME.{k}", kind, default) for k, kind, default in describe_schema(item))
            continue
        node: Any = defaults
        for part in (key if schema is Config else f.name).split("."):
            node = node[part]
        rows.append((key, _type_label(f.type), node))
    return rows


def to_builtins(config: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(config, enc_hook=_enc_hook)  # type: ignore[no-any-return]
