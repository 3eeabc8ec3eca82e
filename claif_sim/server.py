"""`claif-sim`: an offline upstream that speaks the Anthropic Messages and the
OpenAI Chat Completions wire formats, JSON and SSE, over real HTTP/1.1.

It exists so that every test, demo and benchmark crosses a real network stack
without keys or internet. The HTTP layer is h11 (already installed with httpx)
over an anyio TCP listener; each connection is kept alive across requests.

Endpoints:
    POST /v1/messages            Anthropic Messages (JSON; SSE with "stream": true)
    POST /v1/chat/completions    OpenAI Chat Completions (JSON; SSE with "stream": true)
    GET  /v1/models              either format (Anthropic when an anthropic-version
                                 or x-api-key header is present)
    GET  /_sim/stats             counters: requests, in_flight, peak_concurrency, ...
    POST /_sim/reset             zero the counters, restore the start-up faults
    POST /_sim/config            change faults at run time (JSON; see `Faults`)
    GET  /_sim/requests          the last requests received (bodies, key present?)
    POST /_sim/release           let requests held by the `hold` fault go on
    POST /v1/embeddings          deterministic word-hashed vectors (64 dims)
    POST /v1/messages/count_tokens  {"input_tokens": words of the prompt}

With `tools` in a request whose last turn is a user's question, the answer
is a call of the first tool (or the one tool_choice names) with input
{"query": the question}; to a tool result, "Simulated reply to: " the result.

The reply text is a pure function of the request: "Simulated reply to: " and
the last user message. Tokens are whitespace-separated words; streams send a
word per event unless `chunk_chars` cuts the text elsewhere.

While a request waits for its first byte (latency, hold) the simulator keeps
reading its connection, so a client that goes away is noticed at once and
counted in `disconnects`, as a real server's cancelled request would be.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import itertools
import json
import math
import re
import signal
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec
from anyio.abc import SocketAttribute

__all__ = ["SimState", "Faults", "serve", "main", "reply_text"]

_WORDS = re.compile(r"\S+\s*")
_MAX_BODY = 32 * 1024 * 1024
_RECENT = 50
_ANTHROPIC_MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
_OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


@dataclass
class Faults:
    """What the simulator does wrong, on purpose."""

    latency_ms: float = 0.0  # before the response starts
    token_delay_ms: float = 0.0  # between streamed tokens
    errors: list[int] = field(default_factory=list)  # statuses for the next requests, in order
    retry_after: float = 0.0  # the retry-after sent with an injected 429/529
    # How retry-after is written: "seconds", "ms" (retry-after-ms, as OpenAI
    # sends) or "date" (an HTTP date, rounded up to the next whole second).
    retry_after_format: str = "seconds"
    stream_cut_after: int | None = None  # close the connection after N streamed tokens
    stream_error_after: int | None = None  # send an SSE error event after N tokens
    # Stream the text in pieces of this many characters (cutting words) instead
    # of a word per event, and write each event in two writes split inside it
    # (inside a multi-byte character when there is one).
    chunk_chars: int | None = None
    # Only these API keys are accepted (401 for any other); None: any key.
    api_keys: list[str] | None = None
    # Completion requests wait, before anything else, until POST /_sim/release.
    hold: bool = False
    # A 200 that is wrong (plain, non-streamed answers): "wrong_types" (usage
    # "lots", content a string), "bad_usage" (token counts "lots" and -1), "empty" (no content), "html" (JSON labelled
    # text/html), "not_json", "huge" (a 20 MB answer).
    malformed: str | None = None
    # How a 401 names the refused key: "whole", "masked" (sk-ant-a****WXYZ, as
    # OpenAI does) or "cut" (a long plain-text body whose first 200 bytes end
    # inside the key).
    key_echo: str = "whole"
    # POST /v1/embeddings answers with this status (an error body) instead.
    embeddings_status: int | None = None


@dataclass
class SimState:
    startup: Faults
    faults: Faults = field(default_factory=Faults)
    requests: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0
    errors_injected: int = 0
    disconnects: int = 0
    held: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    embeddings: int = 0  # /v1/embeddings requests (not counted in `requests`)
    by_path: dict[str, int] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_RECENT))
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    released: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.faults = dataclasses.replace(self.startup, errors=list(self.startup.errors))
        self.release()
        self.requests = self.errors_injected = self.disconnects = self.connections_opened = self.embeddings = 0
        self.peak_concurrency = self.in_flight
        self.by_path.clear()
        self.recent.clear()

    def release(self) -> None:
        """Let held requests go on; later ones are held again while `hold` is set."""
        self.released.set()
        self.released = anyio.Event()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "errors_injected": self.errors_injected,
            "disconnects": self.disconnects,
            "connections_opened": self.connections_opened,
            "connections_open": self.connections_open,
            "by_path": dict(self.by_path),
            "pending_errors": list(self.faults.errors),
            "held": self.held,
            "embeddings": self.embeddings,
        }


class _ClientGone(Exception):
    pass


# --------------------------------------------------------------- the replies


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _tool_result_text(message: Any) -> str | None:
    """The text of a tool result turn (OpenAI `tool` message, or an Anthropic
    user turn of tool_result blocks); None for any other turn."""
    if not isinstance(message, dict):
        return None
    if message.get("role") == "tool":
        return _text_of(message.get("content"))
    content = message.get("content")
    if message.get("role") == "user" and isinstance(content, list) and content and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return " ".join(_text_of(b.get("content")) for b in content)
    return None


def reply_text(messages: list[dict[str, Any]]) -> str:
    """To a tool result: "Simulated reply to: " and the result; else the same and the last user turn."""
    result = _tool_result_text(messages[-1]) if messages else None
    if result is not None:
        return "Simulated reply to: " + result
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    return "Simulated reply to: " + (_text_of(last_user.get("content")) if last_user else "")


def tool_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(tool name, input) when the answer is a tool call: the request offers
    tools, does not forbid them, and its last turn is a user's question (not
    a tool result). The tool is the one tool_choice names, else the first;
    the input is {"query": the question}."""
    tools = body.get("tools")
    messages = body.get("messages") or []
    if not isinstance(tools, list) or not tools or not messages or _tool_result_text(messages[-1]) is not None:
        return None
    choice = body.get("tool_choice")
    if choice in ("none", {"type": "none"}):
        return None
    names = [(t.get("function") or {}).get("name") if t.get("type") == "function" else t.get("name")
             for t in tools if isinstance(t, dict)]
    name = names[0] if names else ""
    if isinstance(choice, dict):
        name = choice.get("name") or (choice.get("function") or {}).get("name") or name
    last = messages[-1]
    return str(name), {"query": _text_of(last.get("content")) if isinstance(last, dict) else ""}


def _count_words(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    n = sum(_count_words(_text_of(m.get("content"))) for m in body.get("messages", []) if isinstance(m, dict))
    return n + _count_words(_text_of(body.get("system")))


def _cache_read(body: dict[str, Any]) -> int:
    """Prompt-cache tokens read: the system prompt's words when its blocks ask
    for caching (`cache_control`), as if an earlier call had written them."""
    system = body.get("system")
    if isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system):
        return _count_words(_text_of(system))
    return 0


def _answer(body: dict[str, Any], max_tokens: int | None) -> tuple[list[str], bool]:
    """Words of the reply (with their trailing spaces), and whether max_tokens cut it."""
    words = _WORDS.findall(reply_text(body.get("messages", [])))
    if max_tokens is not None and len(words) > max_tokens:
        return words[:max_tokens], True
    return words, False


# -------------------------------------------------------------- HTTP plumbing


class _Exchange:
    """One request/response on a kept-alive h11 connection."""

    def __init__(self, conn: h11.Connection, stream: anyio.abc.ByteStream) -> None:
        self.conn = conn
        self.stream = stream

    async def wait(self, seconds: float | None = None, until: anyio.Event | None = None) -> None:
        """Sleep `seconds` (or until `until` is set) while reading the
        connection, so a client that goes away ends the request at once."""
        if until is None:
            with anyio.move_on_after(math.inf if seconds is None else seconds):
                await self._read_until_closed()
            return
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await until.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            gone = False  # stays so when `until` cancels the read
            try:
                await self._read_until_closed()
            except _ClientGone:
                tg.cancel_scope.cancel()
                gone = True
        if gone:
            raise _ClientGone

    async def _read_until_closed(self) -> None:
        """Read until cancelled; raise _ClientGone at end of stream."""
        while True:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                raise _ClientGone from None
            # A client may send ahead (the next request); h11 keeps it.
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise _ClientGone from exc

    async def respond(self, status: int, doc: Any, headers: list[tuple[str, str]] | None = None,
                      content_type: str = "application/json") -> None:
        body = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
        hdrs = [("content-type", content_type), ("content-length", str(len(body))), *(headers or [])]
        await self.send(h11.Response(status_code=status, headers=hdrs))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def start_sse(self) -> None:
        await self.send(h11.Response(
            status_code=200,
            headers=[("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
        ))

    async def sse(self, data: Any, event: str | None = None, split: bool = False) -> None:
        payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
        raw = ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()
        if not split:
            await self.send(h11.Data(data=raw))
            return
        # Two writes, cut inside the first multi-byte character (or mid-event):
        # the reader must reassemble bytes, not trust write boundaries.
        cut = next((i + 1 for i, b in enumerate(raw) if b >= 0xC0), len(raw) // 2)
        await self.send(h11.Data(data=raw[:cut]))
        await self.send(h11.Data(data=raw[cut:]))


async def _next_event(conn: h11.Connection, stream: anyio.abc.ByteStream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            data = b""
        conn.receive_data(data)


async def _handle_connection(stream: anyio.abc.ByteStream, state: SimState) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    state.connections_opened += 1
    state.connections_open += 1
    try:
        await _serve_connection(conn, stream, state)
    except h11.ProtocolError:
        # A peer that closes mid-body or sends garbage ends its own
        # connection, never the simulator.
        state.disconnects += 1
    finally:
        state.connections_open -= 1
        await anyio.aclose_forcefully(stream)


async def _serve_connection(conn: h11.Connection, stream: anyio.abc.ByteStream, state: SimState) -> None:
    while True:
        try:
            event = await _next_event(conn, stream)
        except h11.RemoteProtocolError:
            return
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:  # type: ignore[comparison-overlap]
            return
        if not isinstance(event, h11.Request):
            return
        body = bytearray()
        while True:
            ev = await _next_event(conn, stream)
            if isinstance(ev, h11.Data):
                body += ev.data
                if len(body) > _MAX_BODY:
                    return
            elif isinstance(ev, h11.EndOfMessage):
                break
            else:
                return
        exchange = _Exchange(conn, stream)
        try:
            await _route(exchange, event, bytes(body), state)
        except _ClientGone:
            state.disconnects += 1
            return
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


# ------------------------------------------------------------------ routing


async def _route(ex: _Exchange, req: h11.Request, body: bytes, state: SimState) -> None:
    method = req.method.decode()
    path = req.target.decode().split("?", 1)[0]
    headers = {k.decode().lower(): v.decode() for k, v in req.headers}
    if method == "POST" and path in ("/v1/messages", "/v1/chat/completions"):
        await _completion(ex, path, headers, body, state)
    elif method == "POST" and path == "/v1/messages/count_tokens":
        try:
            await ex.respond(200, {"input_tokens": _prompt_tokens(json.loads(body))})
        except (ValueError, AttributeError) as exc:
            await ex.respond(400, _error_doc(True, 400, f"invalid body: {exc}"))
    elif method == "POST" and path == "/v1/embeddings":
        await _embeddings(ex, headers, body, state)
    elif method == "GET" and path == "/v1/models":
        await _models(ex, headers)
    elif method == "GET" and path == "/_sim/stats":
        await ex.respond(200, state.stats())
    elif method == "POST" and path == "/_sim/reset":
        state.reset()
        await ex.respond(200, state.stats())
    elif method == "POST" and path == "/_sim/config":
        await _configure(ex, body, state)
    elif method == "GET" and path == "/_sim/requests":
        await ex.respond(200, list(state.recent))
    elif method == "POST" and path == "/_sim/release":
        state.faults.hold = False
        state.release()
        await ex.respond(200, state.stats())
    else:
        await ex.respond(404, {"error": {"message": f"no route for {method} {path}", "type": "not_found"}})


async def _configure(ex: _Exchange, body: bytes, state: SimState) -> None:
    try:
        changes = json.loads(body or b"{}")
        f = state.faults
        for key, value in changes.items():
            if not hasattr(f, key):
                raise ValueError(f"unknown fault {key!r}")
            setattr(f, key, list(value) if key == "errors" else value)
    except (ValueError, TypeError, AttributeError) as exc:
        await ex.respond(400, {"error": {"message": str(exc), "type": "invalid_request"}})
        return
    await ex.respond(200, {"faults": vars(state.faults)})


async def _embeddings(ex: _Exchange, headers: dict[str, str], raw: bytes, state: SimState) -> None:
    """OpenAI's embeddings API with deterministic vectors (see `embedding`)."""
    state.embeddings += 1
    status = state.faults.embeddings_status
    if status:
        await ex.respond(status, _error_doc(False, status, f"simulated {status}"))
        return
    try:
        body = json.loads(raw)
        texts = body["input"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("input must be a string or a list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        await ex.respond(400, _error_doc(False, 400, f"invalid embeddings request: {exc}"))
        return
    data = [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)]
    await ex.respond(200, {"object": "list", "data": data, "model": body.get("model", ""),
                           "usage": {"prompt_tokens": sum(_count_words(t) for t in texts),
                                     "total_tokens": sum(_count_words(t) for t in texts)}})


EMBEDDING_DIM = 64


def embedding(text: str) -> list[float]:
    """A deterministic, unnormalised vector: each lowercased word hashed
    (CRC-32) into one of 64 signed buckets. Rewordings that keep the words
    score near 1; it knows nothing of meaning (a simulator, not a model)."""
    vec = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"\w+", text.lower()):
        h = zlib.crc32(word.encode())
        vec[h % EMBEDDING_DIM] += 1.0 if h & 0x80000000 else -1.0
    return vec


async def _models(ex: _Exchange, headers: dict[str, str]) -> None:
    if "anthropic-version" in headers or "x-api-key" in headers:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in _ANTHROPIC_MODELS]
        await ex.respond(200, {"data": data, "has_more": False, "first_id": _ANTHROPIC_MODELS[0], "last_id": _ANTHROPIC_MODELS[-1]})
    else:
        models = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "claif-sim"} for m in _OPENAI_MODELS]
        await ex.respond(200, {"object": "list", "data": models})


def _error_doc(anthropic: bool, status: int, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}
    kind = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


async def _completion(ex: _Exchange, path: str, headers: dict[str, str], raw: bytes, state: SimState) -> None:
    anthropic = path == "/v1/messages"
    state.requests += 1
    state.by_path[path] = state.by_path.get(path, 0) + 1
    state.in_flight += 1
    state.peak_concurrency = max(state.peak_concurrency, state.in_flight)
    received = time.monotonic()
    try:
        faults = state.faults
        if faults.hold:
            state.held += 1
            try:
                await ex.wait(until=state.released)
            finally:
                state.held -= 1
        if faults.latency_ms:
            await ex.wait(faults.latency_ms / 1000)
        if faults.errors:
            status = faults.errors.pop(0)
            state.errors_injected += 1
            state.recent.append({"path": path, "status": status, "received": received})
            retry = _retry_after_headers(faults) if status in (429, 529) else []
            message = f"simulated {status}"
            if status == 401:
                # As real APIs do, name the key that was refused: the daemon
                # must keep it out of its logs and error messages.
                key = _api_key(headers)
                if faults.key_echo == "masked":
                    key = key[:8] + "*" * 20 + key[-4:]
                elif faults.key_echo == "cut":
                    key = "." * (200 - 40 - len("Incorrect API key provided: ")) + key + " (see the docs)"
                message = f"Incorrect API key provided: {key}"
                if faults.key_echo == "cut":  # a proxy's plain-text page, not the API's JSON
                    await ex.respond(status, message.encode(), retry, content_type="text/plain")
                    return
            await ex.respond(status, _error_doc(anthropic, status, message), retry)
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            await ex.respond(400, _error_doc(anthropic, 400, f"invalid JSON body: {exc}"))
            return
        state.recent.append({
            "path": path,
            "body": body,
            "has_api_key": bool(_api_key(headers)),
            "anthropic_version": headers.get("anthropic-version"),
            "received": received,
        })
        problem = _check_request(anthropic, headers, body, faults.api_keys)
        if problem:
            status, message = problem
            await ex.respond(status, _error_doc(anthropic, status, message))
            return
        if body.get("stream"):
            await (_anthropic_stream if anthropic else _openai_stream)(ex, body, state)
            return
        doc = anthropic_doc(body, state) if anthropic else openai_doc(body, state)
        if state.faults.malformed:
            await _malformed(ex, state.faults.malformed, doc, "content" if anthropic else "choices", "usage")
            return
        await ex.respond(200, doc)
    finally:
        state.in_flight -= 1


def _api_key(headers: dict[str, str]) -> str:
    """Anthropic takes x-api-key (or, in newer SDKs, a bearer token); OpenAI a bearer token."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()


def _retry_after_headers(faults: Faults) -> list[tuple[str, str]]:
    if faults.retry_after_format == "ms":
        return [("retry-after-ms", f"{faults.retry_after * 1000:g}")]
    if faults.retry_after_format == "date":
        when = math.ceil(time.time() + faults.retry_after)
        return [("retry-after", email.utils.formatdate(when, usegmt=True))]
    return [("retry-after", f"{faults.retry_after:g}")]


def _check_request(
    anthropic: bool, headers: dict[str, str], body: dict[str, Any], accepted: list[str] | None
) -> tuple[int, str] | None:
    key = _api_key(headers)
    if accepted is not None and key and key not in accepted:
        return 401, f"Incorrect API key provided: {key}"
    if anthropic:
        if not key:
            return 401, "x-api-key header is required"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version header is required"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: Field required"
    elif not key:
        return 401, "You didn't provide an API key."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, "messages: at least one message is required"
    if not isinstance(body.get("model"), str):
        return 400, "model: Field required"
    return None


def _pieces(words: list[str], chunk_chars: int | None) -> list[str]:
    """What a stream sends: a word per event, or `chunk_chars`-sized cuts."""
    if not chunk_chars:
        return words
    text = "".join(words)
    return [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)]


async def _stream_words(ex: _Exchange, words: list[str], state: SimState, emit: Any, on_error: Any) -> None:
    faults = state.faults
    for i, word in enumerate(_pieces(words, faults.chunk_chars)):
        if faults.stream_cut_after is not None and i >= faults.stream_cut_after:
            await anyio.aclose_forcefully(ex.stream)
            raise _ClientGone  # counted as a disconnect: the connection is gone either way
        if faults.stream_error_after is not None and i >= faults.stream_error_after:
            await on_error()
            return
        if faults.token_delay_ms and i:
            # A plain sleep: the next write notices a client that left, and
            # reading between tokens would cost the sim CPU that benchmarks
            # with hundreds of streams need.
            await anyio.sleep(faults.token_delay_ms / 1000)
        await emit(word)


def anthropic_doc(body: dict[str, Any], state: SimState) -> dict[str, Any]:
    """The JSON answer (not streamed) to an Anthropic Messages request."""
    call = tool_call(body)
    if call is not None:
        return {
            "id": f"msg_sim_{next(state.ids):08d}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "tool_use", "id": f"toolu_sim_{next(state.ids):08d}", "name": call[0],
                         "input": call[1]}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": _cache_read(body)},
        }
    words, truncated = _answer(body, body["max_tokens"])
    return {
        "id": f"msg_sim_{next(state.ids):08d}", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": "".join(words)}],
        "stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": len(words),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": _cache_read(body)},
    }


def _openai_answer(body: dict[str, Any]) -> tuple[list[str], str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words, truncated = _answer(body, limit if isinstance(limit, int) else None)
    return words, "length" if truncated else "stop"


def _openai_usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    prompt = _prompt_tokens(body)
    return {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}


def openai_doc(body: dict[str, Any], state: SimState) -> dict[str, Any]:
    """The JSON answer (not streamed) to an OpenAI Chat Completions request."""
    call = tool_call(body)
    if call is not None:
        return {
            "id": f"chatcmpl-sim{next(state.ids):08d}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "refusal": None,
                "tool_calls": [{"id": f"call_sim{next(state.ids):08d}", "type": "function",
                                "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}}],
            "usage": _openai_usage(body, ["x"]), "system_fingerprint": None,
        }
    words, finish = _openai_answer(body)
    return {
        "id": f"chatcmpl-sim{next(state.ids):08d}", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": _openai_usage(body, words), "system_fingerprint": None,
    }


async def _anthropic_stream(ex: _Exchange, body: dict[str, Any], state: SimState) -> None:
    model = body["model"]
    words, truncated = _answer(body, body["max_tokens"])
    stop_reason = "max_tokens" if truncated else "end_turn"
    usage_in = _prompt_tokens(body)
    msg_id = f"msg_sim_{next(state.ids):08d}"
    await ex.start_sse()
    await ex.sse({"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage_in, "output_tokens": 1,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": _cache_read(body)},
    }}, "message_start")
    call = tool_call(body)
    if call is not None:
        await _anthropic_tool_stream(ex, call, state)
        return
    await ex.sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")
    await ex.sse({"type": "ping"}, "ping")

    split = state.faults.chunk_chars is not None

    async def emit(word: str) -> None:
        await ex.sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
                     "content_block_delta", split)

    errored = False

    async def on_error() -> None:
        nonlocal errored
        errored = True
        await ex.sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    await _stream_words(ex, words, state, emit, on_error)
    if not errored:
        await ex.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        await ex.sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                      "usage": {"output_tokens": len(words)}}, "message_delta")
        await ex.sse({"type": "message_stop"}, "message_stop")
    await ex.send(h11.EndOfMessage())


async def _anthropic_tool_stream(ex: _Exchange, call: tuple[str, dict[str, Any]], state: SimState) -> None:
    """A tool_use block: its input as two input_json_delta pieces."""
    arguments = json.dumps(call[1])
    await ex.sse({"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": f"toolu_sim_{next(state.ids):08d}", "name": call[0], "input": {}}},
        "content_block_start")
    await ex.sse({"type": "ping"}, "ping")
    for piece in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
        await ex.sse({"type": "content_block_delta", "index": 0,
                      "delta": {"type": "input_json_delta", "partial_json": piece}}, "content_block_delta")
    await ex.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    await ex.sse({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                  "usage": {"output_tokens": 1}}, "message_delta")
    await ex.sse({"type": "message_stop"}, "message_stop")
    await ex.send(h11.EndOfMessage())


async def _openai_stream(ex: _Exchange, body: dict[str, Any], state: SimState) -> None:
    model = body["model"]
    words, finish = _openai_answer(body)
    created = int(time.time())
    cid = f"chatcmpl-sim{next(state.ids):08d}"
    usage = _openai_usage(body, words)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            doc["usage"] = None
        return doc

    await ex.start_sse()
    await ex.sse(chunk({"role": "assistant", "content": "", "refusal": None}))

    call = tool_call(body)
    if call is not None:  # the call, then its arguments in two pieces
        arguments = json.dumps(call[1])
        await ex.sse(chunk({"tool_calls": [{"index": 0, "id": f"call_sim{next(state.ids):08d}", "type": "function",
                                            "function": {"name": call[0], "arguments": ""}}]}))
        for piece in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
            await ex.sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        finish, usage = "tool_calls", _openai_usage(body, ["x"])
    elif not await _stream_openai_words(ex, words, state, chunk):
        await ex.send(h11.EndOfMessage())
        return
    await ex.sse(chunk({}, finish))
    if include_usage:
        await ex.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "system_fingerprint": None, "choices": [], "usage": usage})
    await ex.sse("[DONE]")
    await ex.send(h11.EndOfMessage())


async def _stream_openai_words(ex: _Exchange, words: list[str], state: SimState, chunk: Any) -> bool:
    """The text, a chunk per word; False when a stream_error_after fault ended it with an error."""
    split = state.faults.chunk_chars is not None

    async def emit(word: str) -> None:
        await ex.sse(chunk({"content": word}), split=split)

    errored = False

    async def on_error() -> None:
        nonlocal errored
        errored = True
        await ex.sse({"error": {"message": "simulated mid-stream failure", "type": "server_error", "code": None}})

    await _stream_words(ex, words, state, emit, on_error)
    return not errored


async def _malformed(ex: _Exchange, kind: str, doc: dict[str, Any], content_key: str, usage_key: str) -> None:
    """Answer 200 with something a careful client must not take as an answer."""
    if kind == "wrong_types":
        doc[content_key] = "a string where a list belongs"
        doc[usage_key] = "lots"
    elif kind == "bad_usage":  # well formed but for the token counts
        doc[usage_key] = {"input_tokens": "lots", "output_tokens": -1, "prompt_tokens": "lots", "completion_tokens": -1}
    elif kind == "empty":
        if content_key == "content":
            doc["content"] = []
        else:
            doc["choices"][0]["message"]["content"] = ""
    elif kind == "huge":
        big = "x" * (20 * 1024 * 1024)
        if content_key == "content":
            doc["content"] = [{"type": "text", "text": big}]
        else:
            doc["choices"][0]["message"]["content"] = big
    elif kind == "html":
        await ex.respond(200, doc, content_type="text/html; charset=utf-8")
        return
    elif kind == "not_json":
        await ex.respond(200, b"<html><body>Bad gateway</body></html>", content_type="application/json")
        return
    await ex.respond(200, doc)


# -------------------------------------------------------------------- serving


async def serve(
    state: SimState, host: str = "127.0.0.1", port: int = 0, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; reports the bound port through `task_status`."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        task_status.started(bound)

        async def handler(stream: anyio.abc.SocketStream) -> None:
            await _handle_connection(stream, state)

        await listener.serve(handler)


def _parse_codes(text: str) -> list[int]:
    try:
        return [int(code) for code in text.split(",") if code.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--errors takes comma-separated status codes, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="claif-sim", description="Offline Anthropic + OpenAI upstream simulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between streamed tokens")
    p.add_argument("--errors", type=_parse_codes, default=[], help="statuses for the first requests, e.g. 429,529,500")
    p.add_argument("--fast", action="store_true",
                   help="JSON answers only, at a fraction of the CPU (for benchmarks; no streams or faults)")
    args = p.parse_args(argv)
    if args.fast and (args.token_delay_ms or args.errors):
        p.error("--fast serves JSON answers with --latency-ms only (no --token-delay-ms or --errors)")

    async def run() -> None:
        state = SimState(startup=Faults(latency_ms=args.latency_ms, token_delay_ms=args.token_delay_ms, errors=args.errors))
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            if args.fast:
                from .fast import serve_fast

                server = await serve_fast(state, args.host, args.port)
                print(f"listening on http://{args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
                async for _ in signals:
                    server.close()
                    return
            async with anyio.create_task_group() as tg:
                port = await tg.start(serve, state, args.host, args.port)
                print(f"listening on http://{args.host}:{port}", flush=True)
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break

    backend_options = {}
    try:
        import uvloop  # noqa: F401

        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    try:
        anyio.run(run, backend="asyncio", backend_options=backend_options)
    except KeyboardInterrupt:
        pass
    return 0
