"""What a request on either wire must look like, checked before it is
translated (wire.py), so a malformed one is a 400 naming its field -- never
a TypeError deep in a translation, never an upstream fed a shape it chokes on.

The checks are msgspec types over the fields the daemon reads; every other
field passes as it came (`extra`). msgspec names the path of a wrong value:
`Expected `str`, got `int` - at `$.messages[0].content``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["check_anthropic", "check_openai"]


class _Loose(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    pass


# --------------------------------------------------------------- OpenAI


class _ImageURL(_Loose):
    url: str


class _OpenAIPart(_Loose):
    type: str
    text: str | None = None
    image_url: _ImageURL | str | None = None


class _Call(_Loose):
    name: str = ""
    arguments: str | dict[str, Any] | None = None


class _ToolCall(_Loose):
    function: _Call
    id: str = ""
    type: str = "function"


class _OpenAIMessage(_Loose):
    role: str
    content: str | list[_OpenAIPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _Function(_Loose):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _OpenAITool(_Loose):
    type: str = "function"
    function: _Function | None = None


class _NamedFunction(_Loose):
    name: str


class _OpenAIToolChoice(_Loose):
    type: str
    function: _NamedFunction | None = None


class _StreamOptions(_Loose):
    include_usage: bool | None = None


class _OpenAIBody(_Loose):
    messages: list[_OpenAIMessage]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    tools: list[_OpenAITool] | None = None
    tool_choice: str | _OpenAIToolChoice | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    metadata: dict[str, Any] | None = None


# ------------------------------------------------------------ Anthropic


class _Source(_Loose):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class _ResultPart(_Loose):
    type: str
    text: str | None = None


class _Block(_Loose):
    type: str
    text: str | None = None
    source: _Source | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[_ResultPart] | None = None


class _AnthropicMessage(_Loose):
    role: str
    content: str | list[_Block]


class _AnthropicTool(_Loose):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class _AnthropicToolChoice(_Loose):
    type: str
    name: str | None = None


class _AnthropicBody(_Loose):
    messages: list[_AnthropicMessage]
    model: str | None = None
    system: str | list[_Block] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[_AnthropicTool] | None = None
    tool_choice: _AnthropicToolChoice | None = None
    stream: bool | None = None
    metadata: dict[str, Any] | None = None


def _check(body: Any, shape: type[msgspec.Struct]) -> str | None:
    try:
        msgspec.convert(body, shape)
    except msgspec.ValidationError as exc:
        return str(exc).replace("`$.", "`")
    return None


def check_openai(body: Any) -> str | None:
    """Why a Chat Completions body cannot be read (naming the field), or None."""
    return _check(body, _OpenAIBody)


def check_anthropic(body: Any) -> str | None:
    """Why a Messages body cannot be read (naming the field), or None."""
    return _check(body, _AnthropicBody)
