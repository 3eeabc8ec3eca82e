"""What the commands share: exit codes, usage errors, JSON output, small readers and formatters."""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any, TextIO

import msgspec

from ..protocol import CompletionResponse

EXIT_ERROR = 1

EXIT_USAGE = 2

EXIT_UNAVAILABLE = 3

EXIT_INTERRUPTED = 130

class UsageError(Exception):
    pass

def _print_json(doc: Any, out: TextIO = sys.stdout) -> None:
    out.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())
    out.write("\n")

def _response_doc(resp: CompletionResponse, session: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "text": resp.text,
        "model": resp.model,
        "cached": resp.cached,
        "usage": {"input_tokens": resp.usage.input_tokens, "output_tokens": resp.usage.output_tokens},
        "stop_reason": resp.stop_reason,
        "id": resp.id,
        "cache_key": resp.cache_key,
    }
    if resp.semantic is not None:
        doc["semantic"] = msgspec.to_builtins(resp.semantic)
    if resp.optimized is not None:
        doc["optimized"] = resp.optimized
    if resp.fallback is not None:
        doc["fallback"] = resp.fallback
    if session:
        doc["session"] = session
    return doc

def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows

def _stdin_piped() -> bool:
    """Whether stdin is a pipe or a file (read it), not a terminal or /dev/null."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)

def _read_input(path: str) -> str:
    """A file named on the command line; - is stdin."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {path}: not UTF-8 text (byte {exc.start})") from exc

def _parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (50, true, [..], {..}, "quoted"), else the string as typed."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text

def _shown(value: Any) -> str:
    return msgspec.json.encode(value).decode() if isinstance(value, (dict, list, bool)) or value is None else str(value)

def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"

def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return msgspec.json.encode(content).decode()

def _meta(pairs: list[str]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta takes KEY=VALUE, not {pair!r}")
        out[key] = _parse_value(value)
    return out or None


def _fail(kind: str, message: str, code: int) -> int:
    sys.stderr.write(f"claif: {kind}: {message}\n")
    return code


# ------------------------------------------- the CLI's memory of the last exchange


def _last_path() -> str:
    """`$XDG_STATE_HOME/claif/last.json` (else ~/.local/state/claif/last.json):
    what `-c` continues, per daemon socket."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "claif", "last.json")


def _recall(socket: str) -> dict[str, Any] | None:
    """The last exchange made from this user's CLI with this daemon, or None."""
    try:
        with open(_last_path(), "rb") as f:
            doc = msgspec.json.decode(f.read())
    except (OSError, msgspec.DecodeError):
        return None
    entry = doc.get(socket) if isinstance(doc, dict) else None
    return entry if isinstance(entry, dict) else None


def _remember(socket: str, entry: dict[str, Any]) -> None:
    """Keep `entry` as this daemon's last exchange (private: it holds the text;
    a failure to write only loses `-c`, never the answer)."""
    path = _last_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            with open(path, "rb") as f:
                doc = msgspec.json.decode(f.read())
        except (OSError, msgspec.DecodeError):
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        doc[socket] = entry
        if len(doc) > 32:  # (daemons come and go: keep the newest few)
            doc = dict(list(doc.items())[-32:])
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(doc))
        os.replace(tmp, path)
    except OSError as exc:
        print(f"claif: warning: cannot remember this exchange for -c ({exc})", file=sys.stderr)
