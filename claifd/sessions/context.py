"""What of a long conversation is sent upstream (sans-IO).

When the conversation's estimated tokens exceed `session.context.max_tokens`,
the request carries the system prompt and, in their original order:

1. pinned messages;
2. the first user message (it usually states the task);
3. the most recent messages -- at most `session.context.recent` (8), the
   newest included -- newest first, as many as fit in what the budget leaves.

The newest message (the one being answered) is always sent. A tool call and
its result travel together: an assistant message holding `tool_use` blocks
(or `tool_calls`) and the tool results that follow it (role `tool`, or user
messages of `tool_result` blocks) are kept or left out as one unit.

The estimator is pluggable; the default is the usual rough rule for English
text with these models: one token per 4 characters, plus 4 per message for
the role and framing (content blocks count the characters of their JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

__all__ = ["estimate_tokens", "trim", "Estimator", "units", "Turn"]


class Turn(Protocol):
    """A message: a session's (`SessionMessage`, which may be pinned) or a
    request's (`Message`). Read-only attributes, so both structs qualify."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str | list[dict[str, Any]]: ...


Estimator = Callable[[Turn], int]
_T = TypeVar("_T", bound=Turn)
PER_MESSAGE = 4


def _content_chars(content: str | list[dict[str, Any]]) -> int:
    if isinstance(content, str):
        return len(content)
    return len(msgspec.json.encode(content))


def estimate_tokens(message: Turn) -> int:
    return -(-_content_chars(message.content) // 4) + PER_MESSAGE


def estimate_text(text: str | None) -> int:
    return -(-len(text) // 4) if text else 0


def _blocks(message: Turn) -> list[dict[str, Any]]:
    return message.content if isinstance(message.content, list) else []


def _opens_tool_call(message: Turn) -> bool:
    return message.role == "assistant" and any(b.get("type") in ("tool_use", "tool_calls") for b in _blocks(message))


def _is_tool_result(message: Turn) -> bool:
    if message.role == "tool":
        return True
    blocks = _blocks(message)
    return message.role == "user" and bool(blocks) and all(b.get("type") == "tool_result" for b in blocks)


def units(messages: Sequence[Turn]) -> list[list[int]]:
    """Indexes grouped so that a tool call and its results stay together."""
    groups: list[list[int]] = []
    for i, message in enumerate(messages):
        if groups and _is_tool_result(message) and (
            _opens_tool_call(messages[groups[-1][0]]) or _is_tool_result(messages[groups[-1][-1]])
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def trim(
    messages: Sequence[_T],
    system: str | None,
    max_tokens: int,
    recent: int = 8,
    estimator: Estimator = estimate_tokens,
) -> tuple[list[_T], int]:
    """The messages to send, and how many were left out. (A request's
    messages have no `pinned`: only the first user message and the newest
    are then mandatory.)"""
    costs = [estimator(m) for m in messages]
    budget = max_tokens - estimate_text(system)
    if sum(costs) <= budget or not messages:
        return list(messages), 0
    groups = units(messages)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    keep: set[int] = set()
    first_user = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    mandatory = {group_of[i] for i, m in enumerate(messages) if getattr(m, "pinned", False)}
    if first_user is not None:
        mandatory.add(group_of[first_user])
    mandatory.add(len(groups) - 1)  # the newest message is what is being answered
    for g in mandatory:
        keep.update(groups[g])
    left = budget - sum(costs[i] for i in keep)
    taken = len(groups[-1])
    for g in range(len(groups) - 2, -1, -1):
        if g in mandatory:
            continue
        members = groups[g]
        cost = sum(costs[i] for i in members)
        if taken + len(members) > recent or cost > left:
            break
        keep.update(members)
        left -= cost
        taken += len(members)
    kept = [messages[i] for i in sorted(keep)]
    return kept, len(messages) - len(kept)
