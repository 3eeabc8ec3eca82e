"""Reading a completion request from either wire into the daemon's shape
(claif_client/wire.py), with the x-claif-* headers applied, once per
exchange: the inline attempt reads it, and a miss answered in a task reuses
what it read (`_Work`, kept in `Exchange.state`). A request that cannot be
read is a BadRequest (400, in the wire's own error shape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from claif_client.protocol import CacheControl, CompletionRequest
from claif_client.wire import WireError, anthropic_request, openai_request

from ..completions import Prepared
from ..config import Config
from ..errors import BadRequest
from .server import Exchange

__all__ = ["read_chat", "read_messages", "_decode", "_Work"]

# OpenAI-only request fields an Anthropic model cannot take, when the request
# crosses wires (response_format is translated: claifd/structured.py):
# - these change nothing in the answer: dropped, named in x-claif-ignored;
_OPENAI_HARMLESS = ("user", "service_tier", "parallel_tool_calls", "store", "prompt_cache_key", "safety_identifier")
# - these would: a 400 naming the field, unless the caller sends `x-claif-drop-params: true`
#   (then dropped and named in x-claif-ignored).
_OPENAI_ONLY = ("seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
                "reasoning_effort", "modalities", "prediction", "audio", "web_search_options")
# Anthropic-only request fields an OpenAI-compatible model cannot take (the same rule).
_ANTHROPIC_ONLY = ("top_k",)
DROP_HEADER = "x-claif-drop-params"


class _Ask(NamedTuple):
    """A completion request read from either wire, in the daemon's shape,
    with the x-claif-* headers applied."""

    request: CompletionRequest
    stream: bool
    n: int = 1
    include_usage: bool = False
    ignored: tuple[str, ...] = ()  # OpenAI-only fields the target cannot take


class _Work:
    """What the front keeps while it answers a request (`Exchange.state`):
    what the inline attempt learned, so a miss is not read, translated and
    prepared twice, and whether the pipeline has recorded the request."""

    __slots__ = ("ask", "prepared", "recorded", "sink")

    def __init__(self) -> None:
        self.ask: _Ask | None = None
        self.prepared: Prepared | None = None
        self.recorded = False
        self.sink: Any = None  # the answer's sink, once there is one


def _work(ex: Exchange) -> _Work:
    work = ex.state
    if work is None:
        work = ex.state = _Work()
    return work  # type: ignore[no-any-return]


def _decode(ex: Exchange) -> Any:
    try:
        return msgspec.json.decode(ex.body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def read_chat(ex: Exchange, config: Config, type_of: Callable[[str], str], body: Any = None,
              ignored: tuple[str, ...] = ()) -> _Ask:
    """An OpenAI chat request (`body`: already decoded, from the Responses
    API). `type_of(model name)`: the API type of the provider it routes to
    ("" if none)."""
    work = _work(ex)
    if work.ask is None:
        try:
            chat = openai_request(_decode(ex) if body is None else body)
        except WireError as exc:
            raise BadRequest(str(exc)) from None
        request, dropped = _steer(ex, chat.request, "openai", config, type_of)
        work.ask = _Ask(request, chat.stream, chat.n, chat.include_usage, (*ignored, *dropped))
    return work.ask


def read_messages(ex: Exchange, config: Config, type_of: Callable[[str], str] | None = None) -> _Ask:
    """An Anthropic Messages request."""
    work = _work(ex)
    if work.ask is None:
        try:
            request, stream = anthropic_request(_decode(ex))
        except WireError as exc:
            raise BadRequest(str(exc)) from None
        if request.max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        request, dropped = _steer(ex, request, "anthropic", config, type_of)
        work.ask = _Ask(request, stream, ignored=tuple(dropped))
    return work.ask


def _steer(ex: Exchange, request: CompletionRequest, wire: str, config: Config,
           type_of: Callable[[str], str] | None) -> tuple[CompletionRequest, list[str]]:
    """Apply the x-claif-* headers; drop what the target's wire cannot take."""
    h = ex.headers
    mode, namespace, ttl = h.get("x-claif-cache"), h.get("x-claif-namespace"), h.get("x-claif-ttl")
    changes: dict[str, Any] = {}
    if mode or namespace or ttl:
        try:
            changes["cache"] = CacheControl(mode=mode or "use", namespace=namespace or None,
                                            ttl=float(ttl) if ttl else None)
        except ValueError:
            raise BadRequest(f"x-claif-ttl must be seconds, got {ttl!r}") from None
    if h.get("x-claif-session"):
        changes["session"] = h["x-claif-session"]
    ignored: list[str] = []
    if type_of is not None and wire == "openai" and request.extra:
        if type_of(request.model or config.client.model) not in ("openai", "azure"):
            ignored = _untranslatable(h, [k for k in request.extra if k in _OPENAI_ONLY],
                                      request.model or config.client.model)
            ignored += [k for k in request.extra if k in _OPENAI_HARMLESS]
            if ignored:
                kept = {k: v for k, v in request.extra.items() if k not in ignored}
                changes["extra"] = kept or None
    elif type_of is not None and wire == "anthropic" and request.top_k is not None:
        if type_of(request.model or config.client.model) in ("openai", "azure"):
            ignored = _untranslatable(h, ["top_k"], request.model or config.client.model)
            changes["top_k"] = None
    if changes:
        request = msgspec.structs.replace(request, **changes)
    return request, ignored


def _untranslatable(headers: dict[str, str], fields: list[str], model: str) -> list[str]:
    """`fields` the target cannot take and that would change its answer: a
    400 naming the first, unless the caller agreed to lose them."""
    if fields and headers.get(DROP_HEADER, "").lower() not in ("true", "1", "yes"):
        raise BadRequest(f"{fields[0]}: {model} cannot take it and the daemon cannot translate it; send "
                         f"`{DROP_HEADER}: true` to have such fields dropped (named in x-claif-ignored)")
    return fields
