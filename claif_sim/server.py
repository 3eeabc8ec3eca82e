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

The OpenAI paths are served under any prefix, as compatible servers put them
(OpenRouter's /api/v1/chat/completions, Gemini's /v1beta/openai/...,
Azure's /openai/deployments/NAME/chat/completions?api-version=V, with its
`api-key` header).

With `tools` in a request whose last turn is a user's question, the answer
is a call of the first tool (or the one tool_choice names) with input valid
against the tool's schema, its strings the question ({"query": the question}
for a tool without properties; schemas.py); to a tool result, "Simulated
reply to: " the result. With `response_format` (json_object, json_schema) or
Anthropic's `output_format`, the answer is JSON valid against the schema.

The reply text is a pure function of the request: "Simulated reply to: " and
the last user message. Tokens are whitespace-separated words; streams send a
word per event unless `chunk_chars` cuts the text elsewhere.

While a request waits for its first byte (latency, hold) the simulator keeps
reading its connection, so a client that goes away is noticed at once and
counted in `disconnects`, as a real server's cancelled request would be.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute

from .answers import (
    _ANTHROPIC_MODELS,
    _OPENAI_MODELS,
    _count_words,
    _error_doc,
    _prompt_tokens,
    anthropic_doc,
    embedding,
    openai_doc,
    reply_text,
)
from .exchange import _ClientGone, _Exchange, _next_event
from .faults import Faults, SimState, _api_key, _check_request, _retry_after_headers
from .streams import _anthropic_stream, _malformed, _openai_stream

__all__ = ["SimState", "Faults", "serve", "main", "reply_text"]






_MAX_BODY = 32 * 1024 * 1024





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
    except Exception as exc:  # a bug of ours: that connection ends, the simulator serves on
        print(f"claif-sim: connection failed: {type(exc).__name__}: {exc}", file=sys.stderr)
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

async def _route(ex: _Exchange, req: h11.Request, body: bytes, state: SimState) -> None:
    method = req.method.decode()
    target = req.target.decode()
    path = _canonical(target.split("?", 1)[0])
    headers = {k.decode().lower(): v.decode() for k, v in req.headers}
    if method == "POST" and path in ("/v1/messages", "/v1/chat/completions"):
        await _completion(ex, path, headers, body, state, target)
    elif method == "POST" and path == "/v1/messages/count_tokens":
        try:
            doc = json.loads(body)
            state.recent.append({"path": path, "body": doc, "target": target, "received": time.monotonic()})
            await ex.respond(200, {"input_tokens": _prompt_tokens(doc)})
        except (ValueError, AttributeError) as exc:
            await ex.respond(400, _error_doc(True, 400, f"invalid body: {exc}"))
    elif method == "POST" and path == "/v1/embeddings":
        await _embeddings(ex, headers, body, state)
    elif method == "GET" and path == "/v1/models":
        await _models(ex, headers, state.faults.models)
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
    state.recent.append({"path": "/v1/embeddings", "body": body, "received": time.monotonic()})
    data = [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)]
    await ex.respond(200, {"object": "list", "data": data, "model": body.get("model", ""),
                           "usage": {"prompt_tokens": sum(_count_words(t) for t in texts),
                                     "total_tokens": sum(_count_words(t) for t in texts)}})

_KEY_HEADERS = ("authorization", "x-api-key", "api-key")

def _canonical(path: str) -> str:
    """The API a path asks for, whatever prefix a compatible server puts
    before it (OpenRouter's /api/v1, Gemini's /v1beta/openai, Azure's
    /openai/deployments/NAME): /v1/chat/completions, /v1/embeddings, /v1/models."""
    for suffix in ("/chat/completions", "/embeddings", "/models"):
        if path.endswith(suffix) and not path.startswith("/_sim"):
            return "/v1" + suffix
    return path

async def _models(ex: _Exchange, headers: dict[str, str], listed: list[str] | None = None) -> None:
    if listed is not None:
        models = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "claif-sim"} for m in listed]
        await ex.respond(200, {"object": "list", "data": models})
    elif "anthropic-version" in headers or "x-api-key" in headers:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in _ANTHROPIC_MODELS]
        await ex.respond(200, {"data": data, "has_more": False, "first_id": _ANTHROPIC_MODELS[0], "last_id": _ANTHROPIC_MODELS[-1]})
    else:
        models = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "claif-sim"} for m in _OPENAI_MODELS]
        await ex.respond(200, {"object": "list", "data": models})

async def _completion(ex: _Exchange, path: str, headers: dict[str, str], raw: bytes, state: SimState,
                      target: str = "") -> None:
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
            # As sent (a compatible server's prefix, Azure's api-version), and
            # which header carried the key, and the other headers (keys left out).
            "target": target or path,
            "key_header": next((h for h in _KEY_HEADERS if headers.get(h)), None),
            "headers": {k: v for k, v in headers.items() if k not in _KEY_HEADERS},
            "received": received,
        })
        problem = _check_request(anthropic, headers, body, faults.api_keys, faults.require_key)
        if problem:
            status, message = problem
            await ex.respond(status, _error_doc(anthropic, status, message))
            return
        try:
            # A shape no real API would take fails here, before anything is
            # sent: answered 400, as the APIs do, and the simulator serves on.
            doc = anthropic_doc(body, state) if anthropic else openai_doc(body, state)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            await ex.respond(400, _error_doc(anthropic, 400, f"invalid request: {type(exc).__name__}: {exc}"))
            return
        if body.get("stream"):
            await (_anthropic_stream if anthropic else _openai_stream)(ex, body, state)
            return
        if state.faults.malformed:
            await _malformed(ex, state.faults.malformed, doc, "content" if anthropic else "choices", "usage")
            return
        await ex.respond(200, doc)
    finally:
        state.in_flight -= 1


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
