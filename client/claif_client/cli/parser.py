"""The command line's grammar: every command and its options (argparse ships with Python and imports in a few ms)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .._version import __version__
from .common import (
    UsageError,
)


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
    sub.add_parser("spend", help="what calls cost today and this month, what the caches saved, the budgets")

    ask = sub.add_parser("ask", help="one completion")
    ask.add_argument("prompt", metavar="PROMPT", nargs="*",
                     help="the prompt: every word, joined by spaces; - (or nothing) reads stdin when it is piped, "
                          "and piped stdin comes before the words when both are given")
    ask.add_argument("--model", "-m", help="PROVIDER/MODEL, a model id (claude-..., gpt-...) or an alias "
                                           "(default: client.model)")
    ask.add_argument("--continue", "-c", dest="continue_", action="store_true",
                     help="continue your last exchange made from this CLI (an ask or a chat)")
    ask.add_argument("--cid", metavar="ID", help="continue conversation ID (a session id)")
    ask.add_argument("--option", "-o", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="a model option (temperature, top_p, top_k, max_tokens, stop, or any provider field)")
    ask.add_argument("--system", "-s", help="system prompt")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--complexity", choices=("simple", "moderate", "complex"),
                     help="how demanding the question is: picks the model under --model auto and a max_tokens "
                          "default (the daemon's optimizer.* settings)")
    ask.add_argument("--stream", action="store_true", default=None,
                     help="print the answer as it arrives (the default when stdout is a terminal)")
    ask.add_argument("--no-stream", action="store_true", help="print the answer whole, even on a terminal")
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
                      help="runtime (until restart, default), project (the nearest .claif.json, else a new one here) "
                           "or global (~/.claif/config.json)")
    unset = config_sub.add_parser("unset", help="remove a key from a layer (the layers below show through)")
    unset.add_argument("key", metavar="KEY")
    unset.add_argument("--scope", choices=["runtime", "project", "global"], default="runtime")
    config_sub.add_parser("show", help="the effective configuration, secrets redacted")
    config_sub.add_parser("sources", help="each layer: file, loaded, last error")
    config_sub.add_parser("reload", help="re-read the files now")
    validate = config_sub.add_parser("validate", help="check a config file without applying it")
    validate.add_argument("file", metavar="FILE")

    sess = sub.add_parser("session", help="conversation sessions: new, list, show, rm, export, import, fork, recover")
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
    sess_sub.add_parser("recover", help="acknowledge damaged session files the daemon moved aside "
                                        "(after looking at them: health stops being unhealthy)")
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
                      help="continue your last exchange made from this CLI (an ask or a chat)")
    chat.add_argument("--cid", metavar="ID", help="continue conversation ID (a session id)")
    chat.add_argument("--model", "-m")
    chat.add_argument("--system", "-s")

    models = sub.add_parser("models", help="the models of the configured providers, and the aliases")
    models.add_argument("--refresh", action="store_true", help="ask the providers again (else cached 5 min)")

    lg = sub.add_parser("log", help="the request log: date, front, model, outcome, latency, tokens, cost, prompt "
                                    "and answer (kept across restarts)")
    lg.add_argument("--limit", "-n", type=int, default=20, help="the newest N entries (default 20)")
    lg.add_argument("--query", "-q", metavar="TEXT", help="only entries whose prompt or answer holds TEXT")

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
