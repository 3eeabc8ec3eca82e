"""Turning the Python API's keyword arguments into a `CompletionRequest`."""

from __future__ import annotations

from typing import Any

import msgspec

from .protocol import CacheControl, CompletionRequest, Message

__all__ = ["build_request", "CacheArg", "MessagesArg"]

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
    return msgspec.convert(cache, CacheControl)


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

    Raises `TypeError` for an unknown keyword and `ValueError` (msgspec's
    `ValidationError`) for a malformed message, before anything is sent.
    """
    if isinstance(messages, str):
        msgs = [Message(role="user", content=messages)]
    else:
        try:
            msgs = msgspec.convert(messages, list[Message])  # dicts and Messages: the fast path
        except msgspec.ValidationError:
            # Other objects with role/content attributes (dataclasses, SDK types).
            msgs = msgspec.convert(messages, list[Message], from_attributes=True)
    fields: dict[str, Any] = dict(more) if more else {}
    unknown = fields.keys() - _REQUEST_FIELDS
    if unknown:
        raise TypeError(f"unknown request field(s): {', '.join(sorted(unknown))}")
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
