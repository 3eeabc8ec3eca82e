"""The claifd wire protocol: message types and their encoding (sans-IO).

A connection is a byte stream of frames::

    frame = length (4 bytes, big-endian, unsigned) + payload (msgpack, `length` bytes)

The payload is one of the `msgspec.Struct` types below, tagged by its ``type``
field. Nothing here touches a socket: `framing.FrameDecoder` splits bytes into
payloads, `encode_frame` builds a frame, and the two `Decoder`s turn payloads
into typed messages. Both the daemon and the clients use exactly this module.

Conversation::

    client                                  daemon
    Hello{protocol, client}         ->
                                    <-      Welcome{protocol, daemon_version, capabilities}
                                            (or Error{id=0, code="protocol_mismatch"}, then close)
    Ping{id=1}                      ->
    Complete{id=2, stream=true}     ->
                                    <-      Pong{id=1}
                                    <-      Chunk{id=2, text="Hel"}
    Cancel{id=2}                    ->
                                    <-      Error{id=2, code="cancelled"}

Rules:

* Every request carries a client-chosen ``id`` (unique among that connection's
  requests in flight). Every request ends with exactly one terminal reply
  carrying the same id: `Pong`, `Result`, `Done` or `Error`. Streaming requests
  first produce any number of `Chunk` frames. Replies to different requests may
  interleave and arrive in any order (one connection is multiplexed).
* `Cancel{id}` asks the daemon to stop request ``id``; it has no reply of its own,
  the cancelled request ends with ``Error{code="cancelled"}`` (or its normal
  terminal reply, if it finished first).
* A length above `MAX_FRAME_SIZE` is refused before the payload is read: the
  daemon answers ``Error{id=0, code="too_large"}`` and closes the connection,
  since the stream can no longer be trusted. A payload that is not a valid
  message gets ``Error{code="bad_request"}`` (or ``unknown_method``) with the
  request's id when it could be read, else 0; the connection stays usable.
* Schema evolution: new fields always get defaults, unknown fields are ignored,
  so old clients keep working against newer daemons and the reverse.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Union

import msgspec

from .completion import (
    BatchItem,
    BatchProgress,
    CacheControl,
    CompletionRequest,
    CompletionResponse,
    Count,
    ErrorInfo,
    Message,
    SemanticMatch,
    Usage,
)

__all__ = [
    "SemanticMatch", "PROTOCOL_VERSION", "MAX_FRAME_SIZE", "HEADER_SIZE", "ErrorCode", "Message", "Usage",
    "CacheControl", "CompletionRequest", "CompletionResponse", "Hello", "Welcome", "Ping", "GetStatus", "GetSpend",
    "Complete", "Batch", "Cancel", "CacheStats", "CacheClear", "CacheDelete", "Health", "Metrics", "Models",
    "RequestLog", "SessionCreate", "SessionGet", "SessionList", "SessionDelete", "SessionRecover", "SessionExport",
    "SessionImport", "SessionFork", "ConfigGet", "ConfigSet", "ConfigUnset", "ConfigShow", "ConfigSources",
    "ConfigReload", "ConfigValidate", "ErrorInfo", "BatchItem", "BatchProgress", "Pong", "Result", "Chunk",
    "Done", "Error", "Request", "Reply", "REQUEST_TYPES", "encode_frame", "request_decoder", "reply_decoder",
    "hello_decoder"
]

PROTOCOL_VERSION: Final = 1
# Large enough for long conversations with images as base64 content blocks,
# small enough that a garbage length cannot make the daemon allocate gigabytes.
MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
HEADER_SIZE: Final = 4




class ErrorCode:
    """Stable error codes carried by `Error.code`. Clients may switch on them."""

    BAD_REQUEST: Final = "bad_request"
    UNKNOWN_METHOD: Final = "unknown_method"
    TOO_LARGE: Final = "too_large"
    NOT_FOUND: Final = "not_found"
    UPSTREAM_ERROR: Final = "upstream_error"
    RATE_LIMITED: Final = "rate_limited"
    TIMEOUT: Final = "timeout"
    CANCELLED: Final = "cancelled"
    INTERNAL: Final = "internal"
    PROTOCOL_MISMATCH: Final = "protocol_mismatch"
    HANDSHAKE_REQUIRED: Final = "handshake_required"
    SHUTTING_DOWN: Final = "shutting_down"
    OVERLOADED: Final = "overloaded"
    UNSUPPORTED: Final = "unsupported"
    NOT_CONFIGURED: Final = "not_configured"
    STORAGE_ERROR: Final = "storage_error"
    FORBIDDEN: Final = "forbidden"
    TLS_ERROR: Final = "tls_error"
    CIRCUIT_OPEN: Final = "circuit_open"
    # A budget (budgets.*) is spent: not retried, whoever asks.
    BUDGET_EXCEEDED: Final = "budget_exceeded"


# --------------------------------------------------------------------------
# Frames. `tag_field="type"` makes every payload a map with a "type" key.


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class Hello(_Frame, tag="hello"):
    protocol: int
    client: str = ""
    # Where the caller runs (its working directory), and the nearest
    # `.claif.json` found upward from there ("" when there is none): the
    # daemon uses that file as this caller's project layer.
    cwd: str = ""
    project: str = ""


class Welcome(_Frame, tag="welcome"):
    protocol: int
    daemon_version: str
    capabilities: list[str] = []


class Ping(_Frame, tag="ping"):
    id: int


class GetStatus(_Frame, tag="status"):
    id: int


class GetSpend(_Frame, tag="spend"):
    """What calls cost: -> Result{value: {today: {usd, calls, by_provider, by_model, by_namespace, saved}, month:
    {...}, budgets: [...], unpriced: [...]}}."""

    id: int


class Complete(_Frame, tag="complete"):
    id: int
    request: CompletionRequest
    stream: bool = False


class Batch(_Frame, tag="batch"):
    """Run many completions under one concurrency limit.

    Progress arrives as `Chunk{data: BatchProgress}` frames; the terminal
    `Result{value: [BatchItem, ...]}` lists every item in input order. With
    `stream_results`, each progress frame carries its finished item instead
    and the terminal `Result{value: {total, ok, failed}}` only counts them:
    no batch is too large to answer, and the daemon keeps no results.
    """

    id: int
    requests: list[CompletionRequest]
    stream_results: bool = False
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


class Cancel(_Frame, tag="cancel"):
    id: int


class CacheStats(_Frame, tag="cache.stats"):
    id: int


class CacheClear(_Frame, tag="cache.clear"):
    """Drop cached answers: all of them, or one namespace's."""

    id: int
    namespace: str | None = None


class CacheDelete(_Frame, tag="cache.delete"):
    id: int
    key: str


class SessionCreate(_Frame, tag="session.create"):
    """-> Result{value: the new session}. Sending within a session is `complete`
    with `request.session` set: its messages are appended, then the reply."""

    id: int
    title: str | None = None
    model: str | None = None
    system: str | None = None
    metadata: dict[str, Any] | None = None


class SessionGet(_Frame, tag="session.get"):
    """-> Result{value: {id, title, model, system, metadata, created, updated, accessed, messages}}."""

    id: int
    session_id: str


class SessionList(_Frame, tag="session.list"):
    """Most recently updated first; `metadata` filters on equal values.
    -> Result{value: {total, sessions: [{id, title, updated, message_count, model, metadata}]}}."""

    id: int
    metadata: dict[str, Any] | None = None
    offset: Count = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 50


class SessionDelete(_Frame, tag="session.delete"):
    id: int
    session_id: str


class SessionRecover(_Frame, tag="session.recover"):
    """Acknowledge damaged session files the daemon moved aside (they stay on
    disk; health stops being unhealthy for them).
    -> Result{value: {acknowledged: [{path, reason, salvaged, lost, messages_salvaged, messages_lost}]}}."""

    id: int


class SessionExport(_Frame, tag="session.export"):
    """-> Result{value: markdown text, or the session document for "json"}."""

    id: int
    session_id: str
    format: str = "json"


class SessionImport(_Frame, tag="session.import"):
    """A document as `session.export` makes it. -> Result{value: the new session}."""

    id: int
    document: Any


class SessionFork(_Frame, tag="session.fork"):
    """A new session with the messages up to and including index `at` (default: all)."""

    id: int
    session_id: str
    at: int | None = None
    title: str | None = None


class Health(_Frame, tag="health"):
    """-> Result{value: {status: healthy|warning|unhealthy, checks: [{name, status, detail}]}}."""

    id: int


class Metrics(_Frame, tag="metrics"):
    """-> Result{value: Prometheus text exposition}."""

    id: int


class ConfigGet(_Frame, tag="config.get"):
    """-> Result{value: {key, value, source}}; source: default, global, project, env or runtime."""

    id: int
    key: str


class ConfigSet(_Frame, tag="config.set"):
    """Set one dotted key in a layer: runtime (memory), project or global (the
    file is rewritten atomically). -> Result{value: {key, value, source, generation, changed}}."""

    id: int
    key: str
    value: Any
    scope: str = "runtime"


class ConfigUnset(_Frame, tag="config.unset"):
    """Remove one dotted key from a layer (runtime, project or global), so the
    layers below show through. -> Result{value: {key, scope, value, source, generation, changed}}."""

    id: int
    key: str
    scope: str = "runtime"


class ConfigShow(_Frame, tag="config.show"):
    """-> Result{value: the effective configuration, secrets redacted}."""

    id: int


class ConfigSources(_Frame, tag="config.sources"):
    """-> Result{value: {generation, last_error, sources: [{layer, path, exists, loaded, error, unknown_keys}]}}
    (asked from a project: its file is the project source, and `project_warnings` lists its keys that have no
    effect there)."""

    id: int


class ConfigReload(_Frame, tag="config.reload"):
    """Re-read the files now. -> Result{value: {generation, changed, error}}."""

    id: int


class ConfigValidate(_Frame, tag="config.validate"):
    """Would this file content be accepted? -> Result{value: {ok, error, unknown_keys}}."""

    id: int
    text: str
    name: str = "<text>"


class Models(_Frame, tag="models"):
    """-> Result{value: {models: [{id, provider}], aliases, default, errors: {provider: why}}}."""

    id: int
    refresh: bool = False


class RequestLog(_Frame, tag="log"):
    """The request log, newest last: the newest `limit` completions, those
    whose prompt or answer holds `query` when given.
    -> Result{value: [{id, at, front, method, namespace, provider, model, outcome, ms, input_tokens,
    output_tokens, cost_usd, cached, prompt, system, answer}]} (the texts null when log.content is off)."""

    id: int
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    query: str | None = None


class Pong(_Frame, tag="pong"):
    id: int


class Result(_Frame, tag="result"):
    """Terminal reply of a method whose answer is a plain document (status...)."""

    id: int
    value: Any = None


class Chunk(_Frame, tag="chunk"):
    """A piece of a streamed reply: a text delta, or `data` (progress, events)."""

    id: int
    text: str = ""
    data: Any = None


class Done(_Frame, tag="done"):
    """Terminal reply of `complete` (streamed or not)."""

    id: int
    response: CompletionResponse | None = None
    value: Any = None


class Error(_Frame, tag="error"):
    id: int
    code: str
    message: str
    retry_after: float | None = None
    details: dict[str, Any] | None = None


Request = Union[
    Ping, GetStatus, GetSpend, Complete, Batch, Cancel, CacheStats, CacheClear, CacheDelete,
    ConfigGet, ConfigSet, ConfigUnset, ConfigShow, ConfigSources, ConfigReload, ConfigValidate,
    SessionCreate, SessionGet, SessionList, SessionDelete, SessionRecover, SessionExport, SessionImport, SessionFork,
    Health, Metrics, Models, RequestLog,
]
Reply = Union[Pong, Result, Chunk, Done, Error]

# Every tag a daemon of this version understands, to tell an unknown method
# (`unknown_method`) from a known one with a malformed body (`bad_request`).
REQUEST_TYPES: Final = frozenset(t.__struct_config__.tag for t in Request.__args__)  # type: ignore[attr-defined]

_encoder = msgspec.msgpack.Encoder()


def encode_frame(msg: msgspec.Struct) -> bytearray:
    """Encode `msg` as one complete frame (length prefix + payload)."""
    buf = bytearray(HEADER_SIZE)
    _encoder.encode_into(msg, buf, HEADER_SIZE)
    buf[:HEADER_SIZE] = (len(buf) - HEADER_SIZE).to_bytes(HEADER_SIZE, "big")
    return buf


def request_decoder() -> msgspec.msgpack.Decoder[Request]:
    return msgspec.msgpack.Decoder(Request)


def reply_decoder() -> msgspec.msgpack.Decoder[Reply]:
    return msgspec.msgpack.Decoder(Reply)


def hello_decoder() -> msgspec.msgpack.Decoder[Hello | Welcome | Error]:
    return msgspec.msgpack.Decoder(Union[Hello, Welcome, Error])
