"""`claif-sim --fast`: the simulator's JSON answers at a fraction of its CPU,
for benchmarks where the simulator must not be the bottleneck.

The full simulator parses HTTP with h11 over anyio streams and watches each
waiting request's connection: ~170 us of CPU per request, a third of a
benchmark's direct baseline, and at 50 concurrent requests it serialises
them (50 x 170 us = 8.5 ms per wave). This one is an asyncio protocol with
a minimal HTTP/1.1 reader (request line, headers, Content-Length bodies,
keep-alive, pipelining) and serves only what throughput benchmarks use:

    POST /v1/chat/completions, /v1/messages   JSON answers (the same documents
                                              and checks as the full simulator)
    GET  /v1/models, /_sim/stats              as the full simulator
    POST /_sim/reset, /_sim/config            config: `latency_ms` only

Streams, fault injection and chunked request bodies are refused with a 400
that says to run without --fast. The answers are the full simulator's own
(`openai_doc`, `anthropic_doc`), so a benchmark's results are comparable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec

from .answers import _ANTHROPIC_MODELS, _OPENAI_MODELS, _error_doc, anthropic_doc, openai_doc
from .faults import SimState, _check_request
from .server import _MAX_BODY

__all__ = ["serve_fast"]

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 413: b"Payload Too Large"}
_COMPLETIONS = {b"/v1/chat/completions": False, b"/v1/messages": True}  # path -> anthropic?


class _Protocol(asyncio.Protocol):
    def __init__(self, state: SimState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending = 0  # answers scheduled (latency) and not yet written
        self.queue: list[bytes | None] = []  # answers in request order (pipelining)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        self.state.connections_opened += 1
        self.state.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections_open -= 1
        if self.pending:
            self.state.disconnects += 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            try:
                method, target, _version = head[0].split(b" ", 2)
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._close_with(400, {"error": {"message": "malformed request head", "type": "invalid_request"}})
                return
            if "chunked" in headers.get("transfer-encoding", "") or length > _MAX_BODY:
                self._close_with(400, {"error": {"message": "claif-sim --fast reads Content-Length bodies of at "
                                                            "most 32 MiB; run without --fast", "type": "invalid_request"}})
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self._request(method, target.split(b"?", 1)[0], headers, body)

    # ------------------------------------------------------------- answers

    def _request(self, method: bytes, path: bytes, headers: dict[str, str], body: bytes) -> None:
        state = self.state
        slot = len(self.queue)
        self.queue.append(None)
        status, doc = 200, None
        if method == b"POST" and path in _COMPLETIONS:
            status, doc = self._completion(_COMPLETIONS[path], headers, body)
            latency = state.faults.latency_ms
            if latency:
                state.in_flight += 1
                state.peak_concurrency = max(state.peak_concurrency, state.in_flight)
                self.pending += 1
                asyncio.get_running_loop().call_later(latency / 1000, self._later, slot, status, doc)
                return
        elif method == b"GET" and path == b"/v1/models":
            if "anthropic-version" in headers or "x-api-key" in headers:
                doc = {"data": [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                                for m in _ANTHROPIC_MODELS], "has_more": False}
            else:
                doc = {"object": "list", "data": [{"id": m, "object": "model", "created": 1735689600,
                                                   "owned_by": "claif-sim"} for m in _OPENAI_MODELS]}
        elif method == b"GET" and path == b"/_sim/stats":
            doc = state.stats()
        elif method == b"POST" and path == b"/_sim/reset":
            state.reset()
            doc = state.stats()
        elif method == b"POST" and path == b"/_sim/config":
            status, doc = _configure(state, body)
        else:
            status, doc = 404, {"error": {"message": f"no route for {method.decode()} {path.decode()} in --fast mode",
                                          "type": "not_found"}}
        self._ready(slot, _response(status, doc))

    def _completion(self, anthropic: bool, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        state = self.state
        state.requests += 1
        path = "/v1/messages" if anthropic else "/v1/chat/completions"
        state.by_path[path] = state.by_path.get(path, 0) + 1
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return 400, _error_doc(anthropic, 400, f"invalid JSON body: {exc}")
        problem = _check_request(anthropic, headers, body, state.faults.api_keys, state.faults.require_key)
        if problem:
            return problem[0], _error_doc(anthropic, problem[0], problem[1])
        if body.get("stream"):
            return 400, _error_doc(anthropic, 400, "claif-sim --fast answers JSON only; run without --fast for streams")
        return 200, anthropic_doc(body, state) if anthropic else openai_doc(body, state)

    def _later(self, slot: int, status: int, doc: Any) -> None:
        self.state.in_flight -= 1
        self.pending -= 1
        self._ready(slot, _response(status, doc))

    def _ready(self, slot: int, data: bytes) -> None:
        """Write the answers that are due, in request order."""
        self.queue[slot] = data
        if self.transport is None:
            return
        done = 0
        for item in self.queue:
            if item is None:
                break
            self.transport.write(item)
            done += 1
        del self.queue[:done]

    def _close_with(self, status: int, doc: Any) -> None:
        if self.transport is not None:
            self.transport.write(_response(status, doc, close=True))
            self.transport.close()


def _configure(state: SimState, body: bytes) -> tuple[int, Any]:
    try:
        changes = json.loads(body or b"{}")
        unknown = sorted(set(changes) - {"latency_ms"})
        if unknown:
            raise ValueError(f"claif-sim --fast takes only latency_ms, not {', '.join(unknown)}; run without --fast")
        state.faults.latency_ms = float(changes.get("latency_ms", state.faults.latency_ms))
    except (ValueError, TypeError, AttributeError) as exc:
        return 400, {"error": {"message": str(exc), "type": "invalid_request"}}
    return 200, {"faults": vars(state.faults)}


def _response(status: int, doc: Any, close: bool = False) -> bytes:
    body = msgspec.json.encode(doc)
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
        status, _REASONS.get(status, b"Error"), len(body), b"connection: close\r\n" if close else b"")
    return head + body


async def serve_fast(state: SimState, host: str, port: int) -> asyncio.Server:
    """Listen (port 0: any free one); the caller reads the port and serves forever."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Protocol(state), host, port)
