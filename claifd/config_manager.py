"""The live configuration: layers, reloads, change sets and callbacks.

Layers, lowest first: default < global file < project file < environment <
runtime. A reload re-reads both files, merges every layer and validates the
result whole (`config.build_config`); only a valid configuration replaces the
current one. An invalid edit -- a syntax error, a wrong type, a half-written
file -- keeps the last good configuration serving, and its error (file,
position or key, message) is kept in `last_error` and in that file's source
entry until a later reload succeeds.

`generation` counts applied changes: a reload that changes nothing (the
watcher's event for a file we just wrote ourselves, an editor touching a
file) applies nothing and runs no callback.

Callbacks are registered with a glob over dotted keys (`pool.*`,
`logging.level`, `providers.*.api_key`). After each applied change, each
callback whose pattern matches at least one changed key is called once, with
the matching changes, after the new configuration is in place. A failing
callback is logged and does not stop the others.

This module does no waiting: file watching and signals live in the daemon.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from .config import (
    ENV_ALIASES,
    MAX_CONFIG_DEPTH,
    Config,
    ConfigError,
    build_config,
    config_depth,
    env_layer,
    merge_layers,
    parse_config_text,
    read_file_layer,
    to_builtins,
    unknown_keys,
)
from .config.edits import (
    SECRET_MARK,
    Change,
    _del_path,
    _diff,
    _get_path,
    _nested,
    _set_path,
    _unknown_leaves,
    did_you_mean,
    env_warnings,
    flatten,
    layer_errors,
    redact,
    write_json_atomically,
)

__all__ = [
    "ConfigManager", "Change", "Source", "FileRead", "LAYERS", "SECRET_MARK",
    "redact", "flatten", "write_json_atomically", "Scope", "CALLER_KEYS", "is_caller_key", "read_layer",
]

log = structlog.get_logger("claifd.config")

LAYERS = ("default", "global", "project", "env", "runtime")
Scope = Literal["runtime", "project", "global"]
# What a caller's own project file decides for its requests (the model, the
# optimizer, the cache namespace...); every other key is the daemon's, one
# for all callers (one pool, one cache, one set of providers and keys).
CALLER_KEYS = ("client", "models", "auto", "optimizer", "routing", "batch", "cache.enabled", "cache.namespace")


def is_caller_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in CALLER_KEYS)


@dataclass
class FileRead:
    exists: bool
    data: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Source:
    layer: str
    path: Path | None = None
    exists: bool = False
    loaded: bool = False
    error: str | None = None
    unknown_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "path": str(self.path) if self.path else None,
            "exists": self.exists,
            "loaded": self.loaded,
            "error": self.error,
            "unknown_keys": self.unknown_keys,
        }


def read_layer(path: Path) -> FileRead:
    """A config file's content, or why it cannot be used (blocking: a worker thread)."""
    exists = path.exists()
    try:
        return FileRead(exists=exists, data=read_file_layer(path))
    except ConfigError as exc:
        return FileRead(exists=exists, error=str(exc))


Callback = Callable[[Config, Config, list[Change]], None]


class ConfigManager:
    def __init__(self, global_path: Path, project_path: Path, environ: Mapping[str, str]) -> None:
        self.global_path = global_path
        self.project_path = project_path
        self.environ = dict(environ)
        self.generation = 1
        self.last_error: str | None = None
        self.runtime: dict[str, Any] = {}
        self.sources = {
            "default": Source("default", loaded=True, exists=True),
            "global": Source("global", global_path),
            "project": Source("project", project_path),
            "env": Source("env", loaded=True, exists=True),
            "runtime": Source("runtime", loaded=True, exists=True),
        }
        self._layers: dict[str, dict[str, Any]] = {name: {} for name in LAYERS}
        self._layers["default"] = to_builtins(Config())
        self._layers["env"] = env_layer(self.environ)
        self._callbacks: list[tuple[str, Callback]] = []
        self.config = Config()

    def __repr__(self) -> str:
        return f"<ConfigManager generation={self.generation} callbacks={len(self._callbacks)} error={self.last_error!r}>"

    # ------------------------------------------------------------- loading

    def load(self) -> Config:
        """The first load: raises ConfigError when the configuration is invalid."""
        for layer in ("global", "project"):
            self._read_file(layer, strict=True)
        try:
            self.config = self._build()
        except ConfigError as exc:
            raise ConfigError(self._attribute(exc)) from exc
        return self.config

    def _read_file(self, layer: str, *, strict: bool) -> bool:
        """Re-read one file layer now (start-up only: it blocks)."""
        return self.adopt_read(layer, self.read_file(layer), strict=strict)

    def read_file(self, layer: str) -> FileRead:
        """Read one file layer without touching any state (safe in a worker thread)."""
        path = self.sources[layer].path
        assert path is not None
        return read_layer(path)

    def read_files(self) -> dict[str, FileRead]:
        return {layer: self.read_file(layer) for layer in ("global", "project")}

    def adopt_read(self, layer: str, read: FileRead, *, strict: bool = False) -> bool:
        """Take a file's new content as its layer; False (error recorded) if unreadable."""
        source = self.sources[layer]
        source.exists = read.exists
        if read.error is not None:
            source.error = read.error
            source.loaded = False
            if strict:
                raise ConfigError(read.error)
            return False
        data = read.data or {}
        source.unknown_keys = unknown_keys(data)
        for key in source.unknown_keys:
            log.warning("unknown config key ignored", key=key, file=str(source.path), hint=did_you_mean(key).strip())
        self._layers[layer] = data
        source.loaded = read.exists
        source.error = None
        return True

    def _build(self, layers: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
        layers = layers if layers is not None else self._layers
        return build_config(merge_layers(*(layers[name] for name in LAYERS)))

    def reload(self, reason: str = "reload") -> list[Change]:
        """Re-read the files (blocking) and apply; see `apply_reads`."""
        return self.apply_reads(self.read_files(), reason)

    def apply_reads(self, reads: Mapping[str, FileRead], reason: str) -> list[Change]:
        """Apply freshly read files if the result is valid and different.

        Returns the changes applied (empty when nothing changed or the new
        configuration is invalid; then `last_error` says why).
        """
        errors = [read.error for layer, read in reads.items() if not self.adopt_read(layer, read)]
        if errors:
            return self._reject("; ".join(e for e in errors if e), reason)
        try:
            candidate = self._build()
        except ConfigError as exc:
            return self._reject(self._attribute(exc), reason)
        return self._apply(candidate, reason)

    def _attribute(self, error: ConfigError) -> str:
        """Name the layer(s) whose content is invalid, and record it in their source."""
        blamed = []
        for layer in ("global", "project", "env", "runtime"):
            problems = layer_errors(self._layers["default"], self._layers[layer])
            if problems:
                source = self.sources[layer]
                where = str(source.path) if source.path else f"{layer} layer"
                source.error = f"{where}: " + "; ".join(problems)
                blamed.append(source.error)
        return "; ".join(blamed) if blamed else str(error)

    def _reject(self, error: str, reason: str) -> list[Change]:
        self.last_error = error
        log.error("config rejected; keeping the last good configuration", reason=reason, error=error)
        return []

    def _apply(self, candidate: Config, reason: str) -> list[Change]:
        old = self.config
        changes = _diff(to_builtins(old), to_builtins(candidate))
        self.last_error = None
        if not changes:
            return []
        self.config = candidate
        self.generation += 1
        log.info("config applied", reason=reason, generation=self.generation,
                 changed=[c.key for c in changes])
        self._run_callbacks(old, candidate, changes)
        return changes

    # ----------------------------------------------------------- callbacks

    def register_callback(self, pattern: str, fn: Callback) -> None:
        self._callbacks.append((pattern, fn))

    def attach(self, section: str, reconfigure: Callable[[Any], object]) -> None:
        """How configuration reaches a component, the one way: after every
        applied change to `section` (a dotted path such as "pool" or
        "providers.openai"; "" for the whole configuration), call
        `reconfigure(new value of section)`. Components get their initial
        section when they are built."""

        def call(old: Config, new: Config, changes: list[Change]) -> None:
            value: Any = new
            for part in filter(None, section.split(".")):
                value = value[part] if isinstance(value, dict) else getattr(value, part)
            reconfigure(value)

        self.register_callback(f"{section}*" if section else "*", call)

    def _run_callbacks(self, old: Config, new: Config, changes: list[Change]) -> None:
        for pattern, fn in self._callbacks:
            matching = [c for c in changes if fnmatch.fnmatchcase(c.key, pattern)]
            if not matching:
                continue
            try:
                fn(old, new, matching)
            except Exception:
                log.exception("config callback failed", pattern=pattern, callback=getattr(fn, "__qualname__", repr(fn)))

    # ------------------------------------------------------------- surface

    def is_set(self, key: str, project: Mapping[str, Any] | None = None) -> bool:
        """Whether any layer above the defaults sets `key` (cheap: no
        conversion); `project`: a caller's project layer in place of ours."""
        layers = self._layers_for(key, project)
        return any(_get_path(layers[layer], key)[0] for layer in LAYERS[1:])

    def get(self, key: str, project: Mapping[str, Any] | None = None,
            config: Config | None = None) -> tuple[Any, str]:
        """The effective value of `key` (redacted) and the layer it comes
        from; for a caller with a project file, `project` is its layer and
        `config` what it sees (`caller_config`)."""
        found, value = _get_path(to_builtins(config or self.config), key)
        if not found:
            raise KeyError(key)
        layers = self._layers_for(key, project)
        source = "default"
        for layer in LAYERS[1:]:
            if _get_path(layers[layer], key)[0]:
                source = layer
        return redact(value, key), source

    def _layers_for(self, key: str, project: Mapping[str, Any] | None) -> Mapping[str, Mapping[str, Any]]:
        if project is None or not is_caller_key(key):
            return self._layers
        return {**self._layers, "project": project}

    def caller_config(self, project: Mapping[str, Any]) -> Config:
        """What a caller whose project file holds `project` sees: the caller
        keys (CALLER_KEYS) merged with that file as the project layer, every
        other key the daemon's. Raises ConfigError (no I/O)."""
        merged = self._build({**self._layers, "project": project})
        config = self.config
        changed: dict[str, Any] = {}
        for key in CALLER_KEYS:
            section, _, field_name = key.partition(".")
            if not field_name:  # a whole section
                changed[section] = getattr(merged, section)
            else:  # one field of a section that stays the daemon's otherwise
                base = changed.get(section, getattr(config, section))
                changed[section] = msgspec.structs.replace(
                    base, **{field_name: getattr(getattr(merged, section), field_name)})
        return msgspec.structs.replace(config, **changed)

    def show(self) -> dict[str, Any]:
        return redact(to_builtins(self.config))  # type: ignore[no-any-return]

    def sources_info(self) -> list[dict[str, Any]]:
        return [self.sources[name].as_dict() for name in LAYERS]

    def set_runtime(self, key: str, value: Any) -> list[Change]:
        """Set `key` in the runtime layer (no I/O); validated whole first."""
        layer = self.prepare_set("runtime", key, value, json.loads(json.dumps(self.runtime)))
        self.runtime = layer
        return self.adopt_layer("runtime", layer)

    def write_file_setting(self, scope: Scope, key: str, value: Any, path: Path | None = None) -> dict[str, Any]:
        """Set `key` in the global or project file (`path`: a caller's
        project file instead of ours): validate the whole configuration with
        it, then rewrite the file atomically, keeping its other keys.
        Blocking: run it in a worker thread. Raises ConfigError (nothing
        written) for an invalid key or value, or a file that does not parse
        (fix it first)."""
        if scope not in ("global", "project"):
            raise ConfigError(f"unknown scope {scope!r} (runtime, project or global)")
        path = path or (self.global_path if scope == "global" else self.project_path)
        layer = self.prepare_set(scope, key, value, read_file_layer(path))
        write_json_atomically(path, layer)
        return layer

    def prepare_set(self, scope: str, key: str, value: Any, layer: dict[str, Any]) -> dict[str, Any]:
        if config_depth(value) + key.count(".") + 1 > MAX_CONFIG_DEPTH:
            raise ConfigError(f"the value for {key!r} is nested deeper than {MAX_CONFIG_DEPTH} levels")
        if unknown_keys(_nested(key, value)):
            raise ConfigError(f"unknown key {key!r}{did_you_mean(key)}")
        _set_path(layer, key, value)
        # The layer must be valid on its own over the defaults (a value that a
        # higher layer hides today would break the daemon once that one goes),
        # and the whole configuration with it.
        problems = layer_errors(self._layers["default"], layer)
        if problems:
            raise ConfigError("; ".join(problems))
        layers = dict(self._layers)
        layers[scope] = layer
        self._build(layers)  # raises ConfigError: nothing is written or applied
        return layer

    # --------------------------------------------------------------- unset

    def unset_runtime(self, key: str) -> list[Change]:
        layer = json.loads(json.dumps(self.runtime))
        if not _del_path(layer, key):
            raise KeyError(key)
        self._build({**self._layers, "runtime": layer})
        self.runtime = layer
        return self.adopt_layer("runtime", layer)

    def unset_file_setting(self, scope: Scope, key: str, path: Path | None = None) -> dict[str, Any]:
        """Remove `key` from the global or project file (`path`: a caller's
        project file instead; blocking: run it in a worker thread). KeyError
        if the file does not set it."""
        if scope not in ("global", "project"):
            raise ConfigError(f"unknown scope {scope!r} (runtime, project or global)")
        path = path or (self.global_path if scope == "global" else self.project_path)
        layer = read_file_layer(path)
        if not _del_path(layer, key):
            raise KeyError(key)
        self._build({**self._layers, scope: layer})
        write_json_atomically(path, layer)
        return layer

    def path_of(self, scope: str) -> str | None:
        return str(self.global_path if scope == "global" else self.project_path) if scope in ("global", "project") \
            else None

    # ------------------------------------------------------------ warnings

    def warnings(self) -> list[str]:
        """Keys the schema does not know, in files and CLAIF_* variables, with a suggestion."""
        out = []
        for layer in ("global", "project"):
            source = self.sources[layer]
            for key in _unknown_leaves(self._layers[layer]):
                out.append(f"unknown key {key!r} in {source.path}{did_you_mean(key)}")
        for key in _unknown_leaves(self._layers["env"]):
            variable = "CLAIF_" + "__".join(part.upper() for part in key.split("."))
            out.append(f"unknown key {key!r} from ${variable}{did_you_mean(key)}")
        out.extend(env_warnings(self.environ, ENV_ALIASES))
        return out

    def adopt_layer(self, scope: str, layer: dict[str, Any]) -> list[Change]:
        """Apply a layer written by `set` (the watcher's event for it then finds nothing new)."""
        self._layers[scope] = layer
        if scope in ("global", "project"):
            source = self.sources[scope]
            source.exists = source.loaded = True
            source.error = None
            source.unknown_keys = unknown_keys(layer)
        try:
            candidate = self._build()
        except ConfigError as exc:  # another layer went bad in between
            return self._reject(str(exc), f"config set --scope {scope}")
        return self._apply(candidate, f"config set --scope {scope}")

    def validate_text(self, text: str, name: str = "<text>") -> dict[str, Any]:
        """Is this file content a valid configuration on its own (over the defaults)?"""
        try:
            data = parse_config_text(text, name)
        except ConfigError as exc:
            return {"ok": False, "error": str(exc), "unknown_keys": []}
        unknown = unknown_keys(data)
        warnings = [f"unknown key {key!r}{did_you_mean(key)}" for key in _unknown_leaves(data)]
        problems = layer_errors(self._layers["default"], data)
        if problems:
            return {"ok": False, "error": f"{name}: " + "; ".join(problems), "errors": problems,
                    "unknown_keys": unknown, "warnings": warnings}
        return {"ok": True, "error": None, "errors": [], "unknown_keys": unknown, "warnings": warnings}


