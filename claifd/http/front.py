"""The HTTP front: the OpenAI and Anthropic HTTP APIs, served by the daemon
on the one completion pipeline, so the official SDKs, curl and agent tools
use the daemon's cache, pool and sessions by changing a base URL.

    POST /v1/chat/completions      OpenAI Chat Completions (JSON; SSE with "stream": true)
    POST /v1/messages              Anthropic Messages (JSON; SSE, the documented event sequence)
    POST /v1/responses             OpenAI's Responses API, any model (responses.py); GET/DELETE /v1/responses/{id}
    POST /v1/embeddings            OpenAI's, cached exactly per input and batched (embeddings.py)
    POST /v1/messages/count_tokens Anthropic's count for its models, an estimate (said so) for others
    GET  /v1/models                both shapes (Anthropic's when anthropic-version is sent)
    GET  /v1/models/{id}           one of them (the id percent-encoded, as the openai SDK sends it)
    GET  /metrics, GET /health     as `metrics.listen`

Any model through either wire: a request is read into the daemon's shape
(claif_client/wire.py), routed like any other, run on the pipeline into a
sink of the shape it was asked in (sinks.py). Errors come in each API's own
body and status, so the SDKs raise their own classes (400 BadRequestError
... 429 RateLimitError with retry-after, 504 on a timeout).

Where it listens (`server.http.*`, off by default): a Unix socket beside the
daemon's (peer credentials checked as on the main socket), and optionally a
loopback TCP port whose callers present the local token (auth.py).

Per request, headers steer the cache: `x-claif-cache: use|refresh|bypass|only`,
`x-claif-namespace`, `x-claif-ttl`, `x-claif-session`; every answer carries
`x-claif-cache-status: hit-exact|hit-semantic|coalesced|miss` and
`x-claif-request-id`. A cache hit is answered inline, in `data_received`.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from claif_client.protocol import CompletionRequest, CompletionResponse, Message
from claif_client.shapes import anthropic_response, openai_response
from claif_client.wire import WireError, anthropic_request, choice_request

from ..completions import Completions, Prepared, Sink
from ..config import HttpFrontConfig
from ..content import text_of
from ..embeddings import Embeddings
from ..errors import BadRequest, NotFound, error_info
from ..monitoring import CONTENT_TYPE
from ..providers import AnthropicProvider
from ..sessions.context import estimate_text, estimate_tokens
from .auth import TOKEN_FILE, host_and_origin, load_token, peer_uid_in, token_matches
from .reading import DROP_HEADER, _decode, _Work, _work, read_chat, read_messages
from .responses import ResponsesJSON, ResponsesStream, conversation, to_chat
from .server import Exchange, Gone, HttpServer, Limits
from .sinks import Answer, AnthropicJSON, AnthropicStream, OpenAIChoices, OpenAIJSON, OpenAIStream

__all__ = ["HttpFront"]

log = structlog.get_logger("claifd.front")

# The daemon's error codes, as HTTP statuses (an upstream's own status wins).
_STATUS = {"bad_request": 400, "not_found": 404, "not_configured": 401, "rate_limited": 429, "timeout": 504,
           "shutting_down": 503, "storage_error": 500, "upstream_error": 502, "tls_error": 502, "circuit_open": 503, "cancelled": 499,
           "budget_exceeded": 429,
           "internal": 500}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error", 503: "overloaded_error"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_exceeded"}
_CHAT, _MESSAGES, _RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
# The completion routes, as the `front` label of the metrics and the log.
_FRONTS = {_CHAT: "openai", _MESSAGES: "anthropic", _RESPONSES: "responses"}
# Distinct recent requests whose cache keys the hot path remembers.
_HOT_KEYS = 4096
# Errors the daemon's retry policy has already retried (or, for an open
# circuit, decided not to): the caller should not retry them again.
_RETRIED = frozenset({"rate_limited", "upstream_error", "timeout", "tls_error", "circuit_open", "budget_exceeded"})
# A refusal decided in the front, as the daemon's error code (for the metrics).
_REPLY_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
class _Reply(Exception):
    """A complete HTTP answer decided before any byte was sent."""

    def __init__(self, status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc
        self.headers = headers or []


def _anthropic(ex: Exchange) -> bool:
    """The request's errors and model list take Anthropic's shape."""
    return ex.path.startswith(_MESSAGES) or (ex.path.startswith("/v1/models") and "anthropic-version" in ex.headers)


class HttpFront:
    limits = Limits(max_head=64 * 1024, max_body=16 * 1024 * 1024, idle_timeout=300.0)

    def __init__(self, completions: Completions, embeddings: Embeddings,
                 models: Callable[[], Awaitable[dict[str, Any]]],
                 metrics: Callable[[], str], health: Callable[[], Awaitable[dict[str, Any]]],
                 allowed_uids: Callable[[], frozenset[int]], config_dir: Path) -> None:
        self.completions = completions
        self.embeddings = embeddings
        self.models = models
        self.metrics = metrics
        self.health = health
        self.allowed_uids = allowed_uids
        self.config_dir = config_dir
        self.server = HttpServer(self, "front")
        self.token: str | None = None
        self.enabled = False
        self.served = 0
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._default_socket = ""
        self.allowed_hosts: frozenset[str] = frozenset()
        self.allowed_origins: frozenset[str] = frozenset()
        # `_hot_material` -> (cache key, model asked for, ignored fields).
        self._hot: dict[tuple[str | bytes | None, ...], tuple[str, str | None, tuple[str, ...]]] = {}

    def __repr__(self) -> str:
        return f"<HttpFront {self.server!r} served={self.served}>"

    def info(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "socket": self.server.socket_path, "listen": self.server.address,
                "token_file": str(self.config_dir / TOKEN_FILE) if self.token else None, "served": self.served,
                "error": self.server.error}

    async def start(self, task_group: anyio.abc.TaskGroup, config: HttpFrontConfig, default_socket: str) -> None:
        self._default_socket = default_socket
        await self.server.start(task_group, *self._listeners(config))

    def reconfigure(self, config: HttpFrontConfig) -> None:
        self.server.want(*self._listeners(config))

    def _listeners(self, config: HttpFrontConfig) -> tuple[str, str]:
        self.allowed_hosts = frozenset(h.lower() for h in config.allowed_hosts)
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in config.allowed_origins)
        self.limits = self.limits._replace(header_timeout=float(config.header_timeout),
                                           max_connections=config.max_connections,
                                           max_buffered=int(config.max_buffered))
        self.enabled = bool(config.enabled)
        if not self.enabled:
            return "", ""
        listen = config.listen
        try:
            self.token = load_token(self.config_dir)
        except OSError as exc:
            log.error("cannot read or make the HTTP front's token; the TCP listener stays closed", error=str(exc))
            listen = ""
        return config.socket or self._default_socket, listen

    # ----------------------------------------------------- the server's App

    def peer_allowed(self, transport: Any) -> bool:
        return peer_uid_in(transport, self.allowed_uids())

    def authorized(self, headers: dict[str, str]) -> bool:
        return token_matches(headers, self.token)

    def admit(self, headers: dict[str, str], unix: bool) -> tuple[int, str] | None:
        return host_and_origin(headers, unix, self.server.address, self.allowed_hosts, self.allowed_origins)

    def request_id(self) -> str:
        self.served += 1
        return f"req_{self._prefix}{next(self._ids):x}"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.completions.state.tasks.spawn(coro)

    def inline(self, ex: Exchange, authorized: bool) -> bytes | None:
        """A memory-tier hit answered at once, without a task (the hot path);
        None: the request is answered in a task (`serve`)."""
        if not authorized or ex.method != "POST" or "x-claif-session" in ex.headers:
            return None
        completions = self.completions
        if self._hot and not completions.state.draining:
            seen = self._hot.get(_hot_material(ex))
            if seen is not None and (entry := completions.cache.lookup_memory(seen[0])) is not None:
                _work(ex).recorded = True
                completions.record_hit(entry, ex.t0, _FRONTS[ex.path], (ex.body, _FRONTS[ex.path]))
                return self._hit(ex, entry.response(), seen[1], seen[2])
        try:
            if ex.path == _CHAT:
                ask = read_chat(ex, self.completions.config, self.completions.provider_type)
            elif ex.path == _MESSAGES:
                ask = read_messages(ex, self.completions.config, self.completions.provider_type)
            else:
                return None
            if ask.stream or ask.n > 1:
                return None
            work = _work(ex)
            prepared = work.prepared = self.completions.prepare(ask.request, _FRONTS[ex.path])
        except Exception:
            return None  # answered (with its error) by `serve`
        self._remember(ex, prepared, ask.request.model, ask.ignored)
        entry = self.completions.try_hit(prepared, ex.t0)
        if entry is None:
            return None
        work.recorded = True
        response = entry.response()
        if prepared.optimized is not None:
            response = msgspec.structs.replace(response, optimized=prepared.optimized)
        return self._hit(ex, response, ask.request.model, ask.ignored)

    def _hit(self, ex: Exchange, response: CompletionResponse, model: str | None,
             ignored: tuple[str, ...]) -> bytes:
        headers = [("x-claif-cache-status", "hit-exact")]
        if ignored:
            headers.append(("x-claif-ignored", ",".join(ignored)))
        if ex.path == _CHAT:
            doc = openai_response(response, model or response.model, "chatcmpl-" + ex.rid, int(time.time()))
        else:
            doc = anthropic_response(response, model or response.model, "msg_" + ex.rid)
        return ex.response(200, doc, headers)

    def _remember(self, ex: Exchange, prepared: Prepared, model: str | None, ignored: tuple[str, ...]) -> None:
        """The cache key of a request read and prepared once, by its bytes and
        the headers that steer it: a repeat skips reading, validating, routing
        and hashing (as the main socket's hot path does). Only plain reads;
        any config change forgets them all (`forget`)."""
        if prepared.key is None or prepared.mode not in ("use", "only") or prepared.optimized is not None:
            return
        if len(self._hot) >= _HOT_KEYS:
            self._hot.clear()
        self._hot[_hot_material(ex)] = (prepared.key, model, ignored)

    def forget(self, _: Any = None) -> None:
        """A config change: routes, aliases and cache settings may differ."""
        self._hot.clear()

    async def serve(self, ex: Exchange, authorized: bool, unix: bool) -> None:
        try:
            if ex.method == "OPTIONS" and "origin" in ex.headers:
                # A browser's CORS preflight (it carries no token). Its Origin was
                # admitted, so it is one of server.http.allowed_origins.
                await ex.respond(200, b"", [
                    ("access-control-allow-methods", "GET, POST, OPTIONS"),
                    ("access-control-allow-headers", ex.headers.get("access-control-request-headers", "")[:1000]),
                    ("access-control-max-age", "600")])
                return
            if not authorized:
                raise _Reply(401 if not unix else 403, self._error_doc(
                    ex, 401 if not unix else 403,
                    "a local token is required (claif token): Authorization: Bearer TOKEN or x-api-key: TOKEN"
                    if not unix else "this daemon serves its own user only"))
            await self._route(ex)
        except _Reply as reply:
            self._refused(ex, _REPLY_CODES.get(reply.status, "bad_request"))
            await ex.respond(reply.status, reply.doc, reply.headers)
        except Gone:
            raise
        except Exception as exc:
            self._refused(ex, error_info(exc).code)
            await self._fail(ex, exc)

    def _refused(self, ex: Exchange, code: str) -> None:
        """A completion request that failed before the pipeline had it is
        counted too (the pipeline records the rest)."""
        work = _work(ex)
        front = _FRONTS.get(ex.path)
        if not work.recorded and ex.method == "POST" and front is not None:
            work.recorded = True
            self.completions.refused(code, ex.t0, front)

    async def _fail(self, ex: Exchange, exc: BaseException) -> None:
        info = error_info(exc)
        if info.code == "internal":
            log.error("HTTP front request failed", path=ex.path, exc_info=exc)
        status = _STATUS.get(info.code, 500)
        upstream = (info.details or {}).get("status")
        if info.code == "upstream_error" and isinstance(upstream, int) and 400 <= upstream < 600:
            status = upstream
        if ex.started:  # mid-stream: an error event in the stream's own shape
            if ex.path == _RESPONSES:  # (the Responses API's: typed, numbered after the stream's own)
                sink = ex.state.sink if isinstance(ex.state, _Work) else None
                number = sink.sequence if isinstance(sink, ResponsesStream) else 0
                await ex.sse({"type": "error", "code": info.code, "message": info.message, "param": None,
                              "sequence_number": number}, "error")
            else:
                await ex.sse(self._error_doc(ex, status, info.message), "error" if _anthropic(ex) else None)
            await ex.end()
            return
        await ex.respond(status, self._error_doc(ex, status, info.message), _retry_headers(info.code, info.retry_after))

    @staticmethod
    def _error_doc(ex: Exchange, status: int, message: str) -> dict[str, Any]:
        if _anthropic(ex):
            return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    # -------------------------------------------------------------- routes

    async def _route(self, ex: Exchange) -> None:
        method, path = ex.method, ex.path
        if method == "POST" and path == _CHAT:
            await self._chat(ex)
        elif method == "POST" and path == _MESSAGES:
            await self._messages(ex)
        elif method == "POST" and path == _RESPONSES:
            await self._responses(ex)
        elif method in ("GET", "DELETE") and path.startswith(_RESPONSES + "/"):
            await self._stored_response(ex, urllib.parse.unquote(path[len(_RESPONSES) + 1:]))
        elif method == "POST" and path == "/v1/embeddings":
            doc, cached = await self.embeddings.create(_decode(ex))
            total = len(doc["data"])
            await ex.respond(200, doc, [("x-claif-cache-status", "hit-exact" if cached == total else "miss"),
                                        ("x-claif-cached-inputs", f"{cached}/{total}")])
        elif method == "POST" and path == "/v1/messages/count_tokens":
            await self._count_tokens(ex)
        elif method == "GET" and path == "/v1/models":
            await ex.respond(200, await self._models(ex), [])
        elif method == "GET" and path.startswith("/v1/models/"):
            await ex.respond(200, await self._model(ex, urllib.parse.unquote(path[len("/v1/models/"):])), [])
        elif method == "GET" and path == "/metrics":
            await ex.respond(200, self.metrics().encode(), [], CONTENT_TYPE)
        elif method == "GET" and path == "/health":
            doc = await self.health()
            await ex.respond(503 if doc["status"] == "unhealthy" else 200, doc, [])
        else:
            raise _Reply(404, self._error_doc(ex, 404, f"no route for {method} {path}"))

    async def _models(self, ex: Exchange) -> dict[str, Any]:
        listing = await self.models()
        ids = [m["id"] for m in listing["models"]]
        if _anthropic(ex):
            data = [_anthropic_model(i) for i in ids]
            return {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                    "last_id": ids[-1] if ids else None}
        return {"object": "list", "data": [_openai_model(i) for i in ids]}

    async def _count_tokens(self, ex: Exchange) -> None:
        """Anthropic's count_tokens for the model it routes to: an Anthropic
        provider counts (its own model name in the body); for any other model
        the daemon estimates (4 characters a token, as its session budgets
        do) and says so in `x-claif-estimate`. Never sent to a provider that
        does not serve the model."""
        doc = _decode(ex)
        try:
            request, _ = anthropic_request(doc)
        except WireError as exc:
            raise BadRequest(str(exc)) from None
        completions = self.completions
        config = completions.config
        name, model = completions.providers.resolve(request.model, config.client.model, config.models)
        provider = completions.providers.get(name)
        if isinstance(provider, AnthropicProvider):
            status, body = await provider.count_tokens(msgspec.json.encode({**doc, "model": model}))
            await ex.respond(status, body, [])
            return
        tokens = sum(estimate_tokens(m) for m in request.messages) + estimate_text(text_of(request.system, "\n\n"))
        if request.tools:
            tokens += estimate_text(msgspec.json.encode(request.tools).decode())
        await ex.respond(200, {"input_tokens": tokens}, [
            ("x-claif-estimate", f"{name}/{model} is not served by Anthropic: an estimate (4 characters a token)")])

    async def _model(self, ex: Exchange, wanted: str) -> dict[str, Any]:
        """`GET /v1/models/{id}` (the openai SDK sends "openai%2Fgpt-4o" for
        "openai/gpt-4o"): a listed id, or a bare name listed under exactly
        one provider; else 404, as the APIs answer."""
        ids = [m["id"] for m in (await self.models())["models"]]
        found = wanted if wanted in ids else None
        if found is None and "/" not in wanted:
            matches = [i for i in ids if i.split("/", 1)[-1] == wanted]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise _Reply(404, self._error_doc(ex, 404, f"model {wanted[:200]!r} is not in this daemon's list "
                                                       f"(claif models)"))
        return _anthropic_model(found) if "anthropic-version" in ex.headers else _openai_model(found)

    # ------------------------------------------------------------ running

    async def _run(self, ex: Exchange, request: CompletionRequest, sink: Sink | None,
                   status: Answer | None = None) -> CompletionResponse:
        """The completion on the one pipeline, into `sink`. `status`: the
        answer whose x-claif-cache-status this request's outcome decides
        (the sink itself, or the whole answer for choice 0 of n)."""
        completions = self.completions
        work = _work(ex)
        work.recorded = True
        if request.session is not None:
            response, _ = await completions.session_send(request, sink.delta if sink and sink.streaming else None,
                                                         _FRONTS[ex.path])
            if sink is not None:
                await sink.done(response)
            return response
        assert work.ask is not None
        try:
            # The inline attempt prepared the request itself (choice 0's is the request).
            prepared = work.prepared if request is work.ask.request else None
            if prepared is None:
                prepared = completions.prepare(request, _FRONTS[ex.path])
        except Exception as exc:
            completions.refused(error_info(exc).code, ex.t0, _FRONTS[ex.path])
            raise
        if status is not None:
            status.prepared = prepared
        with anyio.fail_after(prepared.timeout):
            return await completions.run(prepared, sink, memory_probed=prepared is work.prepared)

    async def _chat(self, ex: Exchange) -> None:
        ask = read_chat(ex, self.completions.config, self.completions.provider_type)
        model = ask.request.model or ""
        extra = [("x-claif-ignored", ",".join(ask.ignored))] if ask.ignored else []
        rid = "chatcmpl-" + ex.rid
        requests = [choice_request(ask.request, i) for i in range(ask.n)]
        if ask.stream:
            stream = OpenAIStream(ex, model, rid, extra, ask.n, ask.include_usage)
            await _each(ask.n, lambda i: self._run(ex, requests[i], stream.choice(i), stream if i == 0 else None))
            await stream.finish()
        elif ask.n == 1:
            answer = OpenAIJSON(ex, model, rid, extra)
            await self._run(ex, requests[0], answer, answer)
        else:
            choices = OpenAIChoices(ex, model, rid, extra)
            responses: list[CompletionResponse | None] = [None] * ask.n

            async def run(i: int) -> None:
                responses[i] = await self._run(ex, requests[i], None, choices if i == 0 else None)

            await _each(ask.n, run)
            await choices.finish([r for r in responses if r is not None])

    async def _responses(self, ex: Exchange) -> None:
        """The Responses API (responses.py): read as a chat request, the
        conversation of `previous_response_id` before it, answered in the
        Responses shape and kept as a session unless `store` is false."""
        doc = _decode(ex)
        chat, ignored = to_chat(doc)
        completions = self.completions
        ask = read_chat(ex, completions.config, completions.provider_type, chat, tuple(ignored))
        request = ask.request
        previous = doc.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str):
                raise BadRequest("previous_response_id: a string")
            try:
                before = await completions.sessions.get(previous)
            except NotFound:
                raise BadRequest(f"previous_response_id: no stored response {previous[:100]!r}") from None
            if not (before.metadata or {}).get("response"):
                raise BadRequest(f"previous_response_id: {previous[:100]!r} is a session, not a response")
            prior = [Message(role=m.role, content=m.content) for m in before.messages]
            request = msgspec.structs.replace(request, messages=[*prior, *request.messages])
            _work(ex).ask = ask._replace(request=request)
        rid = "resp_" + ex.rid.removeprefix("req_")
        keep = None
        if doc.get("store", True) is not False:
            async def keep(response: CompletionResponse, obj: dict[str, Any]) -> None:
                await completions.sessions.create(
                    title=f"Responses API {rid}", model=response.model, session_id=rid,
                    metadata={"kind": "response", "previous_response_id": previous, "response": obj},
                    messages=conversation(request.messages, response, time.time()))

        extra = [("x-claif-ignored", ",".join(ask.ignored))] if ask.ignored else []
        model = request.model or ""
        sink = (ResponsesStream if ask.stream else ResponsesJSON)(ex, model, rid, extra, doc, keep)
        _work(ex).sink = sink
        await self._run(ex, request, sink, sink)

    async def _stored_response(self, ex: Exchange, rid: str) -> None:
        sessions = self.completions.sessions
        try:
            stored = await sessions.get(rid)
        except NotFound:
            stored = None
        doc = (stored.metadata or {}).get("response") if stored is not None else None
        if doc is None:
            raise _Reply(404, self._error_doc(ex, 404, f"no stored response {rid[:100]!r}"))
        if ex.method == "DELETE":
            await sessions.delete(rid)
            doc = {"id": rid, "object": "response", "deleted": True}
        await ex.respond(200, doc, [])

    async def _messages(self, ex: Exchange) -> None:
        ask = read_messages(ex, self.completions.config, self.completions.provider_type)
        model, rid = ask.request.model or "", "msg_" + ex.rid
        extra = [("x-claif-ignored", ",".join(ask.ignored))] if ask.ignored else []
        sink = AnthropicStream(ex, model, rid, extra) if ask.stream else AnthropicJSON(ex, model, rid, extra)
        await self._run(ex, ask.request, sink, sink)


def _hot_material(ex: Exchange) -> tuple[str | bytes | None, ...]:
    """What decides a request's cache key besides the config: its route, its
    bytes and the headers that steer it."""
    h = ex.headers
    return (ex.path, ex.body, h.get("x-claif-cache"), h.get("x-claif-namespace"), h.get("x-claif-ttl"),
            h.get(DROP_HEADER))


def _openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": model_id.split("/")[0]}


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "1970-01-01T00:00:00Z"}


def _retry_headers(code: str, retry_after: float | None) -> list[tuple[str, str]]:
    """What an SDK needs to decide whether to try again. An error the daemon's
    own retry policy already had (a 429, a 5xx, a timeout, an open circuit)
    says `x-should-retry: false`: the SDK's retries on top would multiply the
    upstream attempts. The wait is the upstream's own, in whole seconds
    (`retry-after`, as RFC 9110 has it) and in milliseconds (`retry-after-ms`,
    which the official SDKs read first)."""
    headers = [("x-should-retry", "false")] if code in _RETRIED else []
    if retry_after is not None:
        wait = max(retry_after, 0.0)
        headers += [("retry-after", str(math.ceil(wait))), ("retry-after-ms", str(round(wait * 1000)))]
    return headers


async def _each(n: int, run: Callable[[int], Coroutine[Any, Any, Any]]) -> None:
    """run(0) .. run(n-1), concurrently when n > 1 (the first failure fails them all)."""
    if n == 1:
        await run(0)
        return
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
