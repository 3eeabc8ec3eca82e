"""`claif`: the command line for the claifd daemon.

Exit codes: 0 success, 1 an error answered by the daemon (or a local one),
2 usage error, 3 the daemon is unreachable, 130 interrupted. Errors print one
line on stderr: ``claif: ErrorType: message``. ``--json`` prints one JSON
document on stdout (``status --watch --json``: one per line).

argparse is the parser: it ships with Python and costs a few milliseconds to
import, which keeps `claif ping` quick.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from typing import Any, NoReturn, TextIO

import msgspec

from ._requests import coerce_request
from ._sync import Client
from ._version import __version__
from .errors import ClaifError, DaemonUnavailable, InvalidRequest
from .protocol import CompletionRequest, CompletionResponse

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="claif", description="Talk to the claifd daemon.")
    p.add_argument("--socket", help="daemon socket (else $CLAIF_SOCKET, else the default path)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the daemon (default 600)")
    p.add_argument("--version", action="version", version=f"claif {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("ping", help="round trip to the daemon")

    st = sub.add_parser("status", help="daemon status")
    st.add_argument("--watch", action="store_true", help="refresh until interrupted")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")

    sub.add_parser("health", help="exit 0 healthy, 1 warning, 2 unhealthy")
    sub.add_parser("metrics", help="Prometheus text exposition")

    ask = sub.add_parser("ask", help="one completion")
    ask.add_argument("prompt", metavar="PROMPT", nargs="*",
                     help="the prompt: every word, joined by spaces; - (or nothing) reads stdin when it is piped, "
                          "and piped stdin comes before the words when both are given")
    ask.add_argument("--model", "-m", help="PROVIDER/MODEL, a model id (claude-..., gpt-...) or an alias "
                                           "(default: client.model)")
    ask.add_argument("--continue", "-c", dest="continue_", action="store_true",
                     help="continue the most recent session (a new one if there is none)")
    ask.add_argument("--option", "-o", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="a model option (temperature, top_p, top_k, max_tokens, stop, or any provider field)")
    ask.add_argument("--system", "-s", help="system prompt")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--complexity", choices=("simple", "moderate", "complex"),
                     help="how demanding the question is: picks the model under --model auto and a max_tokens "
                          "default (the daemon's optimizer.* settings)")
    ask.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    ask.add_argument("--session", help="send within this session")
    modes = ask.add_mutually_exclusive_group()
    modes.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    modes.add_argument("--refresh", action="store_true", help="skip the cache lookup, store the new answer")
    modes.add_argument("--cache-only", action="store_true", help="answer from the cache or fail; never call upstream")
    ask.add_argument("--ttl", type=float, help="seconds this answer may be served from the cache")
    ask.add_argument("--namespace", help="cache namespace (default: cache.namespace)")
    cache = sub.add_parser("cache", help="the response cache: stats, clear, delete")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser, required=True)
    cache_sub.add_parser("stats", help="hits, misses, sizes per tier, what it saved")
    clear = cache_sub.add_parser("clear", help="drop cached answers")
    clear.add_argument("--namespace", help="only this namespace's answers")
    delete = cache_sub.add_parser("delete", help="drop one cached answer")
    delete.add_argument("key", metavar="KEY", help="the cache_key of an answer (see ask --json)")

    config = sub.add_parser("config", help="the layered configuration: get, set, show, sources, validate, reload")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser, required=True)
    get = config_sub.add_parser("get", help="a key's effective value and the layer it comes from")
    get.add_argument("key", metavar="KEY", help="dotted key, e.g. pool.max_connections")
    set_ = config_sub.add_parser("set", help="set a key (applied at once)")
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE", help="JSON (50, true, [1], {...}) or a plain string")
    set_.add_argument("--scope", choices=["runtime", "project", "global"], default="runtime",
                      help="runtime (until restart, default), project (.claif.json) or global (~/.claif/config.json)")
    unset = config_sub.add_parser("unset", help="remove a key from a layer (the layers below show through)")
    unset.add_argument("key", metavar="KEY")
    unset.add_argument("--scope", choices=["runtime", "project", "global"], default="runtime")
    config_sub.add_parser("show", help="the effective configuration, secrets redacted")
    config_sub.add_parser("sources", help="each layer: file, loaded, last error")
    config_sub.add_parser("reload", help="re-read the files now")
    validate = config_sub.add_parser("validate", help="check a config file without applying it")
    validate.add_argument("file", metavar="FILE")

    sess = sub.add_parser("session", help="conversation sessions: new, list, show, rm, export, import, fork")
    sess_sub = sess.add_subparsers(dest="session_command", metavar="ACTION", parser_class=_Parser, required=True)
    new = sess_sub.add_parser("new", help="start a session; prints its id")
    new.add_argument("--title", "-t")
    new.add_argument("--model", "-m", help="model for this session (PROVIDER/MODEL, an alias, or auto)")
    new.add_argument("--system", "-s", help="system prompt for this session")
    new.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (repeatable)")
    lst = sess_sub.add_parser("list", help="sessions, most recently updated first")
    lst.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="only sessions with this metadata")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--offset", type=int, default=0)
    show = sess_sub.add_parser("show", help="a session and its messages")
    show.add_argument("session_id", metavar="ID")
    rm = sess_sub.add_parser("rm", help="delete a session")
    rm.add_argument("session_id", metavar="ID")
    export = sess_sub.add_parser("export", help="a session as markdown or JSON")
    export.add_argument("session_id", metavar="ID")
    export.add_argument("--format", choices=["md", "json"], default="md")
    export.add_argument("--out", "-o", help="write here instead of stdout")
    imp = sess_sub.add_parser("import", help="a session from an exported JSON file (- reads stdin)")
    imp.add_argument("file", metavar="FILE")
    fork = sess_sub.add_parser("fork", help="a new session from message N of another")
    fork.add_argument("session_id", metavar="ID")
    fork.add_argument("--at", type=int, help="last message index to keep (default: all)")
    fork.add_argument("--title")

    chat = sub.add_parser("chat", help="interactive conversation (streams replies; /exit or Ctrl-D to leave)")
    chat.add_argument("--session", help="continue this session (default: a new one)")
    chat.add_argument("--continue", "-c", dest="continue_", action="store_true",
                      help="continue the most recent session")
    chat.add_argument("--model", "-m")
    chat.add_argument("--system", "-s")

    models = sub.add_parser("models", help="the models of the configured providers, and the aliases")
    models.add_argument("--refresh", action="store_true", help="ask the providers again (else cached 5 min)")

    lg = sub.add_parser("log", help="recent requests: time, model, outcome, latency, tokens, cost (no content)")
    lg.add_argument("--limit", "-n", type=int, default=20)

    keys = sub.add_parser("keys", help="API keys the daemon uses")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser, required=True)
    kset = keys_sub.add_parser("set", help="store a provider's key in the daemon's global config (mode 0600); "
                                           "read without echo, or from stdin when piped")
    kset.add_argument("provider", choices=["anthropic", "openai"])
    keys_sub.add_parser("list", help="which providers have a key, and from where")

    sub.add_parser("token", help="the local token callers of the HTTP front's TCP listener present")
    sub.add_parser("env", help="shell lines that point OpenAI and Anthropic tools at the HTTP front "
                               "(eval \"$(claif env)\")")

    b = sub.add_parser("batch", help="run a JSONL file of requests, results as JSONL in input order")
    b.add_argument("file", metavar="FILE.jsonl", help="one request per line (- reads stdin)")
    b.add_argument("--concurrency", "-c", type=int, help="requests at a time (default: batch.concurrency)")
    b.add_argument("--out", "-o", help="write results here instead of stdout")
    return p


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
    if session:
        doc["session"] = session
    return doc


def _cmd_ping(client: Client, args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    client.ping()
    rtt_ms = (time.perf_counter() - t0) * 1000
    if args.json:
        _print_json({"ok": True, "daemon_version": client.daemon_version, "rtt_ms": round(rtt_ms, 3)})
    else:
        print(f"pong from claifd {client.daemon_version} in {rtt_ms:.2f} ms")
    return 0


def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _print_status(doc: dict[str, Any]) -> None:
    rows = _flatten(doc)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {'-' if value is None else value}")


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    if not args.watch:
        doc = client.status()
        _print_json(doc) if args.json else _print_status(doc)
        return 0
    if not args.json:
        from .watch import watch  # rich, only for this command

        return watch(client, args.interval, use_rich=sys.stdout.isatty())
    try:
        while True:  # one JSON document per line, for a program to follow
            sys.stdout.write(msgspec.json.encode(client.status()).decode() + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _stdin_piped() -> bool:
    """Whether stdin is a pipe or a file (read it), not a terminal or /dev/null."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _prompt(words: list[str]) -> str:
    """The words joined by spaces; piped stdin first when there is any (as `llm` does)."""
    if words == ["-"]:
        return sys.stdin.read()
    text = " ".join(words)
    piped = sys.stdin.read() if _stdin_piped() else ""
    if piped.strip() and text:
        return f"{piped.rstrip()}\n\n{text}"
    prompt = piped if piped.strip() else text
    if not prompt.strip():
        raise UsageError("no prompt: give it as words (claif ask what is 2+2) or pipe it in (echo ... | claif ask)")
    return prompt


_OPTION_FIELDS = frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop", "tool_choice", "metadata", "complexity_hint"})


def _options(pairs: list[list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """-o KEY VALUE pairs: (request fields, provider extras)."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, raw in pairs:
        value = _parse_value(raw)
        if key == "stop" and isinstance(value, str):
            value = [value]
        (fields if key in _OPTION_FIELDS else extra)[key] = value
    return fields, extra


def _latest_session(client: Client) -> str | None:
    listing = client.session_list(limit=1)
    return listing["sessions"][0]["id"] if listing["sessions"] else None


def _cmd_ask(client: Client, args: argparse.Namespace) -> int:
    prompt = _prompt(args.prompt)
    mode = "bypass" if args.no_cache else "refresh" if args.refresh else "only" if args.cache_only else "use"
    cache: dict[str, Any] | None = None
    if mode != "use" or args.ttl is not None or args.namespace:
        cache = {"mode": mode, "ttl": args.ttl, "namespace": args.namespace}
    if args.continue_ and not args.session:
        args.session = _latest_session(client) or client.session_create(model=args.model, system=args.system)["id"]
    fields, extra = _options(args.option)
    if args.max_tokens is not None:
        fields["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        fields["temperature"] = args.temperature
    if args.complexity is not None:
        fields["complexity_hint"] = args.complexity
    kwargs: dict[str, Any] = dict(model=args.model, system=args.system, cache=cache, session=args.session, **fields)
    if extra:
        kwargs["extra"] = extra
    if args.stream:
        stream = client.stream(prompt, **kwargs)
        with stream:
            for delta in stream:
                if not args.json:
                    sys.stdout.write(delta)
                    sys.stdout.flush()
        assert stream.response is not None
        if args.json:
            _print_json(_response_doc(stream.response, stream.info))
        else:
            sys.stdout.write("\n")
        return 0
    if args.session:
        resp, info = client.session_send(args.session, prompt, **{k: v for k, v in kwargs.items() if k != "session"})
    else:
        resp, info = client.complete(prompt, **kwargs), None
    if args.json:
        _print_json(_response_doc(resp, info))
    else:
        print(resp.text)
    return 0


def _read_batch(text: str) -> tuple[list[CompletionRequest], list[Any]]:
    """Parse a JSONL batch; raise UsageError naming the first bad line (nothing is sent)."""
    requests: list[CompletionRequest] = []
    custom_ids: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise UsageError(f"line {lineno}: {exc}") from exc
        except RecursionError as exc:
            raise UsageError(f"line {lineno}: JSON nested too deeply") from exc
        if not isinstance(doc, dict):
            raise UsageError(f"line {lineno}: each line must be a JSON object")
        custom_ids.append(doc.get("custom_id"))
        try:
            requests.append(coerce_request(doc, f"line {lineno}"))  # the shape Client.batch takes
        except InvalidRequest as exc:
            raise UsageError(exc.message) from exc
    return requests, custom_ids


def _progress_reporter(total: int) -> tuple[Any, Any]:
    """A progress bar on stderr when it is a terminal; (callback, closer)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]  # only this command pays for the import
    except ImportError:
        def plain(progress: dict[str, Any]) -> None:
            sys.stderr.write(f"\r{progress['done']}/{progress['total']}")
            sys.stderr.flush()

        return plain, lambda: sys.stderr.write("\n")
    bar = tqdm(total=total, unit="req", file=sys.stderr, dynamic_ncols=True)

    def advance(progress: dict[str, Any]) -> None:
        bar.update(1)
        if not progress["ok"]:
            bar.set_postfix_str("some failed")

    return advance, bar.close


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


def _cmd_batch(client: Client, args: argparse.Namespace) -> int:
    requests, custom_ids = _read_batch(_read_input(args.file))
    on_progress, close_progress = _progress_reporter(len(requests))
    try:
        items = client.batch(requests, concurrency=args.concurrency, on_progress=on_progress)
    finally:
        close_progress()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    failed = 0
    try:
        for item, custom_id in zip(items, custom_ids):
            doc: dict[str, Any] = {"index": item.index}
            if custom_id is not None:
                doc["custom_id"] = custom_id
            if item.response is not None:
                doc["ok"] = True
                doc.update(_response_doc(item.response))
            else:
                failed += 1
                assert item.error is not None
                doc["ok"] = False
                doc["error"] = {"code": item.error.code, "message": item.error.message}
            out.write(msgspec.json.encode(doc).decode() + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    sys.stderr.write(f"claif: batch: {len(items)} requests, {len(items) - failed} ok, {failed} failed\n")
    return EXIT_ERROR if failed else 0


def _cmd_cache(client: Client, args: argparse.Namespace) -> int:
    if args.cache_command == "stats":
        doc = client.cache_stats()
        _print_json(doc) if args.json else _print_status(doc)
    elif args.cache_command == "clear":
        removed = client.cache_clear(args.namespace)
        _print_json({"removed": removed}) if args.json else print(f"removed {removed} cached answers")
    else:
        deleted = client.cache_delete(args.key)
        if args.json:
            _print_json({"deleted": deleted})
        elif not deleted:
            return _fail("NotFound", f"no cached answer with key {args.key}", EXIT_ERROR)
        else:
            print("deleted")
    return 0


def _parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (50, true, [..], {..}, "quoted"), else the string as typed."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _cmd_config(client: Client, args: argparse.Namespace) -> int:
    action = args.config_command
    if action == "get":
        doc = client.config_get(args.key)
        if args.json:
            _print_json(doc)
        else:
            value = doc["value"]
            shown = msgspec.json.encode(value).decode() if isinstance(value, (dict, list)) else value
            print(f"{shown}  ({doc['source']})")
    elif action == "set":
        doc = client.config_set(args.key, _parse_value(args.value), args.scope)
        if args.json:
            _print_json(doc)
        else:
            where = f"the {doc['scope']} layer" + (f" ({doc['path']})" if doc.get("path") else "")
            print(f"wrote {doc['key']} = {_shown(doc['written'])} to {where}")
            print(f"effective: {_shown(doc['value'])} (from {doc['source']})")
    elif action == "unset":
        doc = client.config_unset(args.key, args.scope)
        if args.json:
            _print_json(doc)
        else:
            print(f"removed {doc['key']} from the {doc['scope']} layer")
            print(f"effective: {_shown(doc['value'])} (from {doc['source']})")
    elif action == "show":
        _print_json(client.config_show()) if args.json else _print_status(client.config_show())
    elif action == "sources":
        doc = client.config_sources()
        if args.json:
            _print_json(doc)
        else:
            print(f"generation {doc['generation']}; last error: {doc['last_error'] or '-'}")
            for src in doc["sources"]:
                state = "loaded" if src["loaded"] else "missing" if not src["exists"] else "NOT loaded"
                where = src["path"] or ""
                print(f"  {src['layer']:<8} {state:<10} {where}")
                if src["error"]:
                    print(f"           error: {src['error']}")
                for key in src["unknown_keys"]:
                    print(f"           unknown key: {key}")
    elif action == "reload":
        doc = client.config_reload()
        if args.json:
            _print_json(doc)
        elif doc["error"]:
            return _fail("ConfigError", doc["error"], EXIT_ERROR)
        else:
            print(f"generation {doc['generation']}; changed: {', '.join(doc['changed']) or 'nothing'}")
    else:
        doc = client.config_validate(_read_input(args.file), args.file)
        if args.json:
            _print_json(doc)
        else:
            print("valid" if doc["ok"] else "invalid:")
            for error in doc.get("errors") or ([] if doc["ok"] else [doc["error"]]):
                print(f"  error: {error}")
            for warning in doc.get("warnings") or [f"unknown key {k!r}" for k in doc["unknown_keys"]]:
                print(f"  warning: {warning} (ignored)")
        return 0 if doc["ok"] else EXIT_ERROR
    return 0


def _shown(value: Any) -> str:
    return msgspec.json.encode(value).decode() if isinstance(value, (dict, list, bool)) or value is None else str(value)


def _cmd_models(client: Client, args: argparse.Namespace) -> int:
    doc = client.models(refresh=args.refresh)
    if args.json:
        _print_json(doc)
        return 0
    print(f"default: {doc['default']}")
    for model in doc["models"]:
        print(model["id"])
    for alias, target in sorted(doc["aliases"].items()):
        print(f"{alias} -> {target}  (alias)")
    for provider, why in sorted(doc["errors"].items()):
        print(f"# {provider}: {why}", file=sys.stderr)
    return 0


def _cmd_log(client: Client, args: argparse.Namespace) -> int:
    rows = client.request_log(args.limit)
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        when = time.strftime("%H:%M:%S", time.localtime(row["at"]))
        model = f"{row['provider']}/{row['model']}" if row["provider"] else row["model"] or "-"
        print(f"{when}  {model:<36} {row['outcome']:<14} {row['ms']:>9.1f} ms  "
              f"{row['input_tokens']:>6} in {row['output_tokens']:>6} out  ${row['cost_usd']:.6f}")
    return 0


def _cmd_keys(client: Client, args: argparse.Namespace) -> int:
    if args.keys_command == "list":
        rows = {name: client.config_get(f"providers.{name}.api_key") for name in ("anthropic", "openai")}
        if args.json:
            _print_json(rows)
        else:
            for name, doc in rows.items():
                state = f"set ({doc['source']})" if doc["value"] is not None else "not set in the config"
                print(f"{name:<10} {state}")
        return 0
    provider = args.provider
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass(f"{provider} API key (not shown): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise UsageError("no key given")
    doc = client.config_set(f"providers.{provider}.api_key", key, "global")
    if args.json:
        _print_json({"provider": provider, "path": doc.get("path"), "source": doc["source"]})
    else:
        print(f"stored the {provider} key in {doc.get('path') or 'the global config'} (mode 0600); "
              f"the daemon uses it now (effective from: {doc['source']})")
    return 0


def _meta(pairs: list[str]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta takes KEY=VALUE, not {pair!r}")
        out[key] = _parse_value(value)
    return out or None


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return msgspec.json.encode(content).decode()


def _cmd_session(client: Client, args: argparse.Namespace) -> int:
    action = args.session_command
    if action == "new":
        doc = client.session_create(args.title, args.model, args.system, _meta(args.meta))
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    elif action == "list":
        doc = client.session_list(_meta(args.meta), args.offset, args.limit)
        rows = [{"id": r["id"], "title": r["title"], "updated": r["updated"], "message_count": r["message_count"]}
                for r in doc["sessions"]]
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(f"{r['id']}  {_when(r['updated'])}  {r['message_count']:>5} msgs  {r['title']}")
            if doc["total"] > len(rows):
                print(f"({doc['total']} sessions; --offset/--limit for more)")
    elif action == "show":
        doc = client.session_get(args.session_id)
        if args.json:
            _print_json(doc)
        else:
            print(f"{doc['title'] or doc['id']}  [{doc['id']}]  model: {doc.get('model') or 'default'}")
            if doc.get("system"):
                print(f"system: {doc['system']}")
            for i, m in enumerate(doc.get("messages", [])):
                pin = " (pinned)" if m.get("pinned") else ""
                print(f"\n[{i}] {m['role']}{pin}:\n{_content_text(m['content'])}")
    elif action == "rm":
        client.session_delete(args.session_id)
        _print_json({"deleted": args.session_id}) if args.json else print(f"deleted {args.session_id}")
    elif action == "export":
        doc = client.session_export(args.session_id, args.format)
        text = doc if isinstance(doc, str) else msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    elif action == "import":
        try:
            document = msgspec.json.decode(_read_input(args.file))
        except msgspec.DecodeError as exc:
            raise UsageError(f"{args.file} is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise UsageError(f"{args.file}: JSON nested too deeply") from exc
        doc = client.session_import(document)
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    else:
        doc = client.session_fork(args.session_id, args.at, args.title)
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    return 0


def _cmd_health(client: Client, args: argparse.Namespace) -> int:
    doc = client.health()
    if args.json:
        _print_json(doc)
    else:
        print(doc["status"])
        for check in doc["checks"]:
            detail = f"  {check['detail']}" if check["detail"] else ""
            latency = f" ({check['latency_ms']:.1f} ms)" if check.get("latency_ms") is not None else ""
            print(f"  {check['name']:<18} {check['status']}{latency}{detail}")
    return {"healthy": 0, "warning": 1}.get(doc["status"], 2)


def _cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    text = client.metrics()
    _print_json({"text": text}) if args.json else sys.stdout.write(text)
    return 0


def _cmd_chat(client: Client, args: argparse.Namespace) -> int:
    """A line-editing loop (readline: history, arrows) that streams replies.
    Ctrl-C during a reply stops that reply; Ctrl-D or /exit leaves."""
    try:
        import readline  # noqa: F401  -- enables line editing for input()
    except ImportError:
        pass
    session_id = args.session or (_latest_session(client) if args.continue_ else None)
    session_id = session_id or client.session_create(model=args.model, system=args.system)["id"]
    interactive = sys.stdin.isatty()
    print(f"session {session_id} (/exit to leave)", file=sys.stderr)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        stream = client.stream(line, session=session_id, model=args.model)
        try:
            for delta in stream:
                sys.stdout.write(delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            sys.stdout.write("\n[stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
    print(f"session {session_id} saved", file=sys.stderr)
    return 0


def _front(client: Client) -> tuple[dict[str, Any], str]:
    """The HTTP front's status and its token (read from the daemon's 0600 file)."""
    info = client.status().get("http") or {}
    if not info.get("enabled"):
        raise UsageError("the HTTP front is off: claif config set server.http.enabled true --scope global")
    path = info.get("token_file")
    try:
        token = open(path).read().strip() if path else ""
    except OSError as exc:
        raise UsageError(f"cannot read the HTTP front's token ({exc})") from exc
    return info, token


def _cmd_token(client: Client, args: argparse.Namespace) -> int:
    _, token = _front(client)
    print(token)
    return 0


def _cmd_env(client: Client, args: argparse.Namespace) -> int:
    info, token = _front(client)
    if not info.get("listen"):
        raise UsageError(f"the HTTP front listens only on its Unix socket ({info.get('socket')}); tools that take "
                         "a base URL need TCP: claif config set server.http.listen 127.0.0.1:8765 --scope global")
    url = f"http://{info['listen']}"
    lines = {"OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": token,
             "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": token}
    if args.json:
        _print_json(lines)
    else:
        for name, value in lines.items():
            print(f"export {name}={value}")
    return 0


_COMMANDS = {
    "ping": _cmd_ping, "status": _cmd_status, "ask": _cmd_ask, "batch": _cmd_batch,
    "cache": _cmd_cache, "config": _cmd_config, "session": _cmd_session, "chat": _cmd_chat,
    "health": _cmd_health, "metrics": _cmd_metrics, "models": _cmd_models, "log": _cmd_log, "keys": _cmd_keys,
    "token": _cmd_token, "env": _cmd_env,
}

# Options of `claif` itself, accepted after the subcommand too (`claif ask hi --json`).
_GLOBAL_FLAGS = frozenset({"--json"})
_GLOBAL_VALUED = frozenset({"--socket", "--timeout"})


def _hoist_globals(argv: list[str]) -> list[str]:
    """Move global options found after the subcommand to the front (up to a `--`)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i:i + 2])
            i += 1
        elif arg.split("=", 1)[0] in _GLOBAL_VALUED and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _fail(kind: str, message: str, code: int) -> int:
    sys.stderr.write(f"claif: {kind}: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(_hoist_globals(sys.argv[1:] if argv is None else list(argv)))
    except UsageError as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "concurrency", None) is not None and args.concurrency < 1:
        return _fail("UsageError", "--concurrency must be at least 1", EXIT_USAGE)
    timeout = args.timeout if args.timeout is not None else 600.0
    try:
        with Client(args.socket, timeout=timeout, client_name=f"claif-cli/{__version__}") as client:
            return _COMMANDS[args.command](client, args)
    except UsageError as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)
    except DaemonUnavailable as exc:
        return _fail(type(exc).__name__, str(exc), EXIT_UNAVAILABLE)
    except ClaifError as exc:
        return _fail(type(exc).__name__, str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`claif ask ... | head`): not an error worth a trace.
        return 0
    except (TypeError, ValueError) as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)


if __name__ == "__main__":
    raise SystemExit(main())
