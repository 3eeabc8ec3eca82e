"""The small pieces the configuration manager is built from: which values
are secrets and how they are redacted, dotted keys over nested layers
(get, set, delete, flatten, diff), unknown keys with a suggestion, and a
JSON file written atomically (0600)."""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..fs import ensure_private_dir
from ..redaction import redact_url
from . import (
    Config,
    ConfigError,
    build_config,
    merge_layers,
    unknown_keys,
)
from .loader import struct_of_map

SECRET_MARK = "[redacted]"


# Secrets by the name of their key: exactly these, or ending in `_<word>`
# (so `max_tokens` and other counts are not secrets, `auth_token` is).
_SECRET_NAMES = ("api_key", "api_keys", "apikey", "api-key", "x-api-key", "secret", "password", "passwd",
                 "authorization", "token", "key")


_SECRET_SUFFIXES = ("_api_key", "_secret", "_password", "_token", "_authorization")


# ... and by the shape of their value, whatever the key.
_SECRET_VALUE = re.compile(r"^(sk|pk|rk)-[A-Za-z0-9_\-]{8,}|^sk_[A-Za-z0-9]{8,}|^Bearer\s", re.I)


@dataclass(frozen=True)
class Change:
    key: str
    kind: Literal["added", "changed", "removed"]
    old: Any
    new: Any


def is_secret(key: str, value: Any = None) -> bool:
    """Whether a config key holds a secret: by its name (`api_key`,
    `*_secret`, `password`, `authorization`, `*_token`; never a count like
    `max_tokens`) or by the shape of its value (`sk-...`)."""
    leaf = key.rsplit(".", 1)[-1].lower()
    if leaf in _SECRET_NAMES or leaf.endswith(_SECRET_SUFFIXES):
        return True
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value))


def redact(value: Any, key: str = "") -> Any:
    """`value` with every secret leaf replaced by SECRET_MARK (None stays None)."""
    if isinstance(value, dict):
        return {k: redact(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        whole = bool(key) and is_secret(key)  # api_keys: every item
        return [SECRET_MARK if isinstance(v, str) and (whole or is_secret("", v)) else v for v in value]
    if value is not None and is_secret(key, value):
        return SECRET_MARK
    if isinstance(value, str) and "@" in value and "://" in value:  # a URL's password (pool.proxy, redis.url)
        try:
            return redact_url(value)
        except ValueError:
            return SECRET_MARK
    return value


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a nested dict (an empty dict has no leaves)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    a, b = flatten(old), flatten(new)
    changes = [Change(k, "removed", a[k], None) for k in a.keys() - b.keys()]
    changes += [Change(k, "added", None, b[k]) for k in b.keys() - a.keys()]
    changes += [Change(k, "changed", a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]]
    return sorted(changes, key=lambda c: c.key)


def _get_path(doc: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set_path(doc: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def write_json_atomically(path: Path, doc: Mapping[str, Any]) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory:
    readers (and the watcher) see the old file or the new one, never half."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # the file may hold API keys
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def layer_errors(defaults: Mapping[str, Any], layer: Mapping[str, Any]) -> list[str]:
    """Every problem of `layer` on its own over the defaults (not only the
    first, as one validation of the whole would say), each naming its key."""
    try:
        build_config(merge_layers(defaults, layer))
        return []
    except ConfigError as whole:
        problems: list[str] = []
        for key, value in flatten(layer).items():
            try:
                build_config(merge_layers(defaults, _nested(key, value)))
            except ConfigError as exc:
                message = exc.message if key in exc.message else f"{key}: {exc.message}"
                problems.append(message)
        return problems or [whole.message]


def did_you_mean(key: str) -> str:
    """ " (did you mean 'client.model'?)" for a near miss of a known key, else "".

    Each part of the dotted key is matched at its level of the schema: the
    exact name, else a name that extends it (`ttl` -> `default_ttl`), else the
    closest spelling (`clinet` -> `client`)."""
    schema: Any = Config
    chosen: list[str] = []
    for part in key.split("."):
        if (item := struct_of_map(schema)) is not None:  # providers.NAME: any name, then its section
            chosen.append(part)
            schema = item
            continue
        if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
            chosen.append(part)  # inside a map (models, prices): any name goes
            continue
        fields = {f.name: f.type for f in msgspec.structs.fields(schema)}
        if part not in fields:
            extends = [n for n in fields if n.endswith("_" + part) or n.startswith(part + "_")]
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            guess = extends[0] if extends else close[0] if close else None
            if guess is None:
                return ""
            part = guess
        chosen.append(part)
        schema = fields[part]
    suggestion = ".".join(chosen)
    return f" (did you mean {suggestion!r}?)" if suggestion != key else ""


def _unknown_leaves(data: Mapping[str, Any]) -> list[str]:
    """Unknown keys of a layer, down to their leaves (`clinet.model`, not `clinet`)."""
    out: list[str] = []
    for key in unknown_keys(data):
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        out.extend(f"{key}.{leaf}" for leaf in flatten(node)) if isinstance(node, Mapping) and node else out.append(key)
    return out


def _del_path(doc: dict[str, Any], key: str) -> bool:
    """Remove `key` (dotted) from a nested dict, and parents it leaves empty. False if absent."""
    parts = key.split(".")
    trail = [doc]
    for part in parts[:-1]:
        node = trail[-1].get(part)
        if not isinstance(node, dict):
            return False
        trail.append(node)
    if parts[-1] not in trail[-1]:
        return False
    del trail[-1][parts[-1]]
    for depth in range(len(parts) - 1, 0, -1):
        if not trail[depth]:
            del trail[depth - 1][parts[depth - 1]]
    return True


def _nested(key: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    _set_path(doc, key, value)
    return doc


# CLAIF_* variables read by the processes themselves, not config keys.
PROCESS_VARIABLES = frozenset({"CLAIF_SOCKET", "CLAIF_TRUSTED_UIDS"})


def _leaf_keys(schema: Any, prefix: str = "") -> list[str]:
    """Every dotted key of the schema's sections (maps of sections left out)."""
    out: list[str] = []
    for field in msgspec.structs.fields(schema):
        kind = field.type
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            out.extend(_leaf_keys(kind, f"{prefix}{field.name}."))
        else:
            out.append(prefix + field.name)
    return out


def env_warnings(environ: Mapping[str, str], aliases: Mapping[str, Any]) -> list[str]:
    """A warning, with a suggestion, for each CLAIF_* variable nothing reads:
    the seed's single-underscore names (CLAIF_POOL_MAX_CONNECTIONS: levels
    take a double underscore), CLAIF_API_KEY, and near misses."""
    names = [n for n in environ if n.startswith("CLAIF_") and "__" not in n and n not in aliases
             and n not in PROCESS_VARIABLES]
    if not names:
        return []
    flat = {key.upper().replace(".", "_"): key for key in _leaf_keys(Config)}
    known = sorted(PROCESS_VARIABLES | set(aliases))
    out = []
    for name in sorted(names):
        if name == "CLAIF_API_KEY":
            out.append("$CLAIF_API_KEY is not read: API keys are providers.NAME.api_key (`claif keys set NAME`), "
                       "or ANTHROPIC_API_KEY / OPENAI_API_KEY in the daemon's environment")
        elif (key := flat.get(name[len("CLAIF_"):])) is not None:
            variable = "CLAIF_" + "__".join(part.upper() for part in key.split("."))
            out.append(f"${name} is not read: for {key} write ${variable} (a double underscore between levels)")
        else:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
            hint = f" (did you mean ${close[0]}?)" if close else ""
            out.append(f"${name} is not read: no such variable{hint}")
    return out
