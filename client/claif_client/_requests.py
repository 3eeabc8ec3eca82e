"""Turning the Python API's keyword arguments into a `CompletionRequest`."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import InvalidRequest
from .protocol import MAX_FRAME_SIZE, CacheControl, CompletionRequest, Message

__all__ = ["build_request", "coerce_request", "CacheArg", "MessagesArg"]

CacheArg = bool | str | dict[str, Any] | CacheControl | None
MessagesArg = str | list[Message] | list[dict[str, Any]]

_REQUEST_FIELDS = frozenset(CompletionRequest.__struct_fields__)


def _cache_control(cache: CacheArg) -> CacheControl | None:
    """`True`/None: default behaviour; `False`: bypass; a mode name; a dict."""
    if cache is None or cache is True:
        return None
    if cache is False:
        return CacheControl(mode="bypass")
    if isinstance(cache, str):
        return CacheControl(mode=cache)
    if isinstance(cache, CacheControl):
        return cache
    try:
        return msgspec.convert(cache, CacheControl)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"cache: {exc}") from exc


def build_request(
    messages: MessagesArg,
    *,
    model: str | None = None,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    cache: CacheArg = None,
    session: str | None = None,
    more: dict[str, Any] | None = None,
) -> CompletionRequest:
    """Validate the arguments of `complete`/`stream` into one request.

    Raises `InvalidRequest` (a ClaifError, also a TypeError and a
    ValueError) naming the field, before anything is sent.
    """
    if isinstance(messages, str):
        msgs = [Message(role="user", content=messages)]
    else:
        try:
            msgs = msgspec.convert(messages, list[Message])  # dicts and Messages: the fast path
        except msgspec.ValidationError:
            # Other objects with role/content attributes (dataclasses, SDK types).
            try:
                msgs = msgspec.convert(messages, list[Message], from_attributes=True)
            except msgspec.ValidationError as exc:
                raise InvalidRequest(f"messages: {exc}") from exc
    fields: dict[str, Any] = dict(more) if more else {}
    unknown = fields.keys() - _REQUEST_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown request field(s): {', '.join(sorted(unknown))}")
    # Types and ranges of the other fields are the daemon's to check (its
    # bad_request names the field): checking them here too would cost every call.
    return CompletionRequest(
        messages=msgs,
        model=model,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        cache=_cache_control(cache),
        session=session,
        **fields,
    )


# Keys a request document may carry besides CompletionRequest's fields
# (the shorthands `claif batch` lines and `Client.batch` items share).
SHORTHAND_KEYS = frozenset({"prompt", "custom_id"})


def coerce_request(item: Any, where: str = "request") -> CompletionRequest:
    """A CompletionRequest from one, or from a dict with the request's fields
    and the `prompt` shorthand (one user message, after any `messages`);
    `custom_id` is ignored here. InvalidRequest naming `where` otherwise."""
    if isinstance(item, CompletionRequest):
        return item
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected a dict or a CompletionRequest, got {type(item).__name__}")
    doc = dict(item)
    unknown = doc.keys() - _REQUEST_FIELDS - SHORTHAND_KEYS
    if unknown:
        raise InvalidRequest(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
    doc.pop("custom_id", None)
    prompt = doc.pop("prompt", None)
    if prompt is not None:
        doc["messages"] = [*doc.get("messages", []), {"role": "user", "content": prompt}]
    if isinstance(doc.get("cache"), (str, bool)):
        control = _cache_control(doc["cache"])
        doc["cache"] = None if control is None else msgspec.to_builtins(control)
    try:
        return msgspec.convert(doc, CompletionRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{where}: {exc}") from exc


# A Batch frame's own fields and msgpack's per-item overhead, kept free below the frame limit.
_BATCH_MARGIN = 64 * 1024
_encoder = msgspec.msgpack.Encoder()


def split_batch(requests: list[CompletionRequest],
                limit: int = MAX_FRAME_SIZE - _BATCH_MARGIN) -> list[tuple[int, list[CompletionRequest]]]:
    """`requests` in consecutive parts whose Batch frames each fit in one
    frame: (index of the part's first request, the part). A request that is
    alone over the limit is an InvalidRequest naming it."""
    parts: list[tuple[int, list[CompletionRequest]]] = []
    start, size = 0, 0
    current: list[CompletionRequest] = []
    for i, request in enumerate(requests):
        need = len(_encoder.encode(request))
        if need > limit:
            raise InvalidRequest(f"request {i} is {need} bytes encoded, over the {limit}-byte frame limit")
        if current and size + need > limit:
            parts.append((start, current))
            start, size, current = i, 0, []
        current.append(request)
        size += need
    if current or not parts:
        parts.append((start, current))
    return parts
