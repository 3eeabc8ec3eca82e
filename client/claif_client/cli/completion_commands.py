"""`claif ask`, `claif chat` and `claif batch`: completions."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from .._requests import coerce_request
from .._sync import Client
from ..errors import ClaifError, InvalidRequest
from ..protocol import CompletionRequest, CompletionResponse
from .common import (
    EXIT_ERROR,
    UsageError,
    _parse_value,
    _print_json,
    _read_input,
    _recall,
    _remember,
    _response_doc,
    _stdin_piped,
)


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
# Provider fields people pass with -o (any other name still goes, with a warning when it looks misspelt).
_PROVIDER_FIELDS = frozenset({"seed", "presence_penalty", "frequency_penalty", "response_format", "user", "logprobs",
                              "top_logprobs", "logit_bias", "reasoning_effort", "service_tier", "parallel_tool_calls",
                              "thinking", "max_completion_tokens", "n"})

def _options(pairs: list[list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """-o KEY VALUE pairs: (request fields, provider extras)."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, raw in pairs:
        if key not in _OPTION_FIELDS and key not in _PROVIDER_FIELDS:
            import difflib

            close = difflib.get_close_matches(key, sorted(_OPTION_FIELDS | _PROVIDER_FIELDS), n=1, cutoff=0.75)
            if close:
                print(f"claif: warning: unknown option {key!r} (did you mean {close[0]}?); sent to the provider as "
                      f"it is", file=sys.stderr)
        value = _parse_value(raw)
        if key == "stop" and isinstance(value, str):
            value = [value]
        (fields if key in _OPTION_FIELDS else extra)[key] = value
    return fields, extra

def _continued(client: Client, args: argparse.Namespace) -> str | None:
    """The session `-c` or `--cid` continues: --cid's; else the last exchange
    made from this user's CLI with this daemon (a plain ask becomes a session
    of its two messages); None (and a word on stderr) when there is none."""
    if args.cid:
        return str(args.cid)
    last = _recall(str(client.socket_path))
    if last is None:
        print("claif: nothing to continue from this CLI yet: a new conversation", file=sys.stderr)
        return None
    if last.get("session"):
        return str(last["session"])
    now = time.time()
    messages = [{"role": "user", "content": last.get("prompt", ""), "time": now},
                {"role": "assistant", "content": last.get("answer", ""), "time": now, "model": last.get("model")}]
    return str(client.session_import({
        "id": "", "title": str(last.get("prompt", ""))[:60], "model": last.get("model"), "system": last.get("system"),
        "metadata": {"source": "claif ask -c"}, "created": now, "updated": now, "accessed": now,
        "messages": messages})["id"])

def _cmd_ask(client: Client, args: argparse.Namespace) -> int:
    prompt = _prompt(args.prompt)
    mode = "bypass" if args.no_cache else "refresh" if args.refresh else "only" if args.cache_only else "use"
    cache: dict[str, Any] | None = None
    if mode != "use" or args.ttl is not None or args.namespace:
        cache = {"mode": mode, "ttl": args.ttl, "namespace": args.namespace}
    if (args.continue_ or args.cid) and not args.session:
        args.session = _continued(client, args)
    try:
        return _ask(client, args, prompt, cache)
    except ClaifError as exc:
        hint = _flag_hint(args, exc)
        if hint:
            raise UsageError(f"{exc}{hint}") from exc
        raise

def _flag_hint(args: argparse.Namespace, exc: ClaifError) -> str:
    """When an option's value looks like words of the prompt (`claif ask what
    does -m mean`), how to say that: after `--`."""
    argv = getattr(args, "argv", None) or []
    if "ask" not in argv or "model" not in str(exc):
        return ""
    rest = argv[argv.index("ask") + 1:]
    for flag in ("-m", "--model"):
        if flag in rest:
            at = rest.index(flag)
            if any(not word.startswith("-") for word in rest[:at]):  # prompt words before the flag
                value = rest[at + 1] if at + 1 < len(rest) else ""
                return (f" (if `{flag} {value}` was meant as words of the prompt, put the prompt after --: "
                        f"claif ask -- {' '.join(rest)})")
    return ""

def _ask(client: Client, args: argparse.Namespace, prompt: str, cache: dict[str, Any] | None) -> int:
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
    streaming = args.stream or (args.stream is None and not args.no_stream and not args.json and sys.stdout.isatty())
    if streaming:
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
            _say_fallback(stream.response)
        _keep_last(client, args, prompt, stream.response)
        return 0
    if args.session:
        resp, info = client.session_send(args.session, prompt, **{k: v for k, v in kwargs.items() if k != "session"})
    else:
        resp, info = client.complete(prompt, **kwargs), None
    if args.json:
        _print_json(_response_doc(resp, info))
    else:
        print(resp.text)
        _say_fallback(resp)
    _keep_last(client, args, prompt, resp)
    return 0

def _say_chosen_model(client: Client, resp: CompletionResponse) -> None:
    """Once per daemon and model: which model answered when none was chosen
    (the only provider with a key answers while client.model is not set)."""
    chosen = (resp.optimized or {}).get("model") or {}
    if "only provider" not in str(chosen.get("rule", "")):
        return
    told = f"{client.socket_path}#told-model"
    if (_recall(told) or {}).get("model") == chosen.get("chosen"):
        return
    print(f"claif: answering with {chosen.get('chosen')}, {chosen.get('rule')}; choose with -m MODEL or "
          f"`claif config set client.model MODEL --scope global` (said once)", file=sys.stderr)
    _remember(told, {"model": chosen.get("chosen")})

def _keep_last(client: Client, args: argparse.Namespace, prompt: str, resp: CompletionResponse) -> None:
    """What `-c` continues next: this session, or this exchange."""
    _say_chosen_model(client, resp)
    if args.session:
        _remember(str(client.socket_path), {"session": args.session})
    else:
        _remember(str(client.socket_path), {"prompt": prompt, "answer": resp.text, "model": resp.model,
                                            "system": args.system})


def _say_fallback(resp: CompletionResponse) -> None:
    """On stderr, so the answer on stdout stays clean for pipes."""
    if resp.fallback:
        f = resp.fallback
        print(f"claif: answered by {f.get('to')}: {f.get('from')} failed ({f.get('reason')})", file=sys.stderr)

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

_CHAT_HELP = """commands (never sent to the model):
  /help           this list
  /model NAME     answer with NAME from now on
  /system TEXT    the system prompt from now on (/system alone: none)
  /clear          a new conversation (this one stays saved)
  /save [FILE]    write the conversation as Markdown (default: SESSION.md)
  /exit           leave (Ctrl-D too)
A line of three double quotes (\"\"\") starts a message of several lines, ended by
another such line; pasted text is one message, its indentation kept."""

_PASTE_START, _PASTE_END = "\x1b[200~", "\x1b[201~"


def _read_message(interactive: bool) -> str:
    """One message: a line, a \"\"\" block, or a bracketed paste (as terminals
    mark it when readline does not take it whole). EOFError at the end."""
    line = input("you> " if interactive else "")
    if line.startswith(_PASTE_START):
        text = line[len(_PASTE_START):]
        while _PASTE_END not in text:
            text += "\n" + input("")
        return text.replace(_PASTE_END, "")
    if line.strip() == '"""':
        lines: list[str] = []
        while True:
            more = input("... " if interactive else "")
            if more.strip() == '"""':
                return "\n".join(lines)
            lines.append(more)
    return line


def _cmd_chat(client: Client, args: argparse.Namespace) -> int:
    """A line-editing loop (readline: history, arrows) that streams replies.
    Slash commands steer it and never reach the model; Ctrl-C during a reply
    cancels that reply (nothing of it is saved); Ctrl-D or /exit leaves."""
    try:
        import readline  # noqa: F401  -- enables line editing (and whole pastes) for input()
    except ImportError:
        pass
    socket = str(client.socket_path)
    session_id = args.session or (_continued(client, args) if args.continue_ or args.cid else None)
    session_id = session_id or client.session_create(model=args.model, system=args.system)["id"]
    model = args.model or client.session_get(session_id).get("model") or client.config_get("client.model")["value"]
    system = args.system
    interactive = sys.stdin.isatty()
    print(f"session {session_id} · model {model} (/help for commands, /exit to leave)", file=sys.stderr)
    _remember(socket, {"session": session_id})
    while True:
        try:
            text = _read_message(interactive)
        except EOFError:
            break
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /exit leaves)", file=sys.stderr)
            continue
        if not text.strip():
            continue
        if text.startswith("/"):
            command, _, rest = text.strip().partition(" ")
            rest = rest.strip()
            if command in ("/exit", "/quit"):
                break
            if command == "/help":
                print(_CHAT_HELP, file=sys.stderr)
            elif command == "/model":
                if rest:
                    model = rest
                print(f"model {model}", file=sys.stderr)
            elif command == "/system":
                system = rest or None
                print(f"system prompt {'set' if system else 'cleared'}", file=sys.stderr)
            elif command == "/clear":
                session_id = client.session_create(model=model, system=system)["id"]
                _remember(socket, {"session": session_id})
                print(f"new session {session_id} · model {model}", file=sys.stderr)
            elif command == "/save":
                path = rest or f"{session_id}.md"
                with open(path, "w", encoding="utf-8") as f:
                    f.write(client.session_export(session_id, "md"))
                print(f"saved to {path}", file=sys.stderr)
            else:
                print(f"unknown command {command} (/help lists them; nothing was sent)", file=sys.stderr)
            continue
        stream = client.stream(text, session=session_id, model=model, system=system)
        try:
            for delta in stream:
                sys.stdout.write(delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            sys.stdout.write("\n")
            print("[cancelled: neither this question nor the partial answer was saved; send it again to retry]",
                  file=sys.stderr)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    print(f"session {session_id} saved", file=sys.stderr)
    return 0
