"""`claif ask`, `claif chat` and `claif batch`: completions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from .._requests import coerce_request
from .._sync import Client
from ..errors import InvalidRequest
from ..protocol import CompletionRequest, CompletionResponse
from .common import (
    EXIT_ERROR,
    UsageError,
    _parse_value,
    _print_json,
    _read_input,
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
            _say_fallback(stream.response)
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
    return 0


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
