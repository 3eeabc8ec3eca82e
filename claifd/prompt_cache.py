"""Provider prompt caching, placed for the caller (sans-IO).

Anthropic bills a prompt prefix read from its cache at a tenth of the input
price, but only where the request marks the end of a cacheable prefix
(`cache_control`); writing one costs 1.25x. Most callers mark nothing. For
a request to a model with explicit prompt caching that carries no marker of
its own, `PromptCache.place` adds up to `MAX_BREAKPOINTS`:

- on the last tool and on the system prompt, the first time they are seen:
  they are stable by nature (the prefix through each must reach the model's
  minimum, `min_tokens`);
- on the latest turn whose prefix an earlier request had (in a session, an
  agent loop, or across requests): the longest such prefix, so the next
  call reads all of it.

The caller's own markers are kept and nothing is added to them. Token
counts are estimates (4 characters a token). What was placed is reported
in the reply's `optimized.prompt_cache`; `optimizer.prompt_cache: false`
turns it off.

It runs on the way upstream, after the cache key was computed: markers
change what the provider bills, never the answer, so a repeated request
still hits the response cache whatever was placed.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import msgspec

from claif_client.protocol import CompletionRequest, Message

__all__ = ["PromptCache", "MAX_BREAKPOINTS", "min_tokens", "has_markers"]

MAX_BREAKPOINTS = 4
EPHEMERAL = {"type": "ephemeral"}
# Prefixes remembered (fingerprints), and for how long a seen one counts.
SEEN_MAX = 50_000
SEEN_FOR = 3600.0

_encode = msgspec.json.encode


def min_tokens(model: str) -> int:
    """The shortest prefix the model caches (Anthropic: 2,048 tokens for the Haiku models, else 1,024)."""
    return 2048 if "haiku" in model else 1024


def has_markers(request: CompletionRequest) -> bool:
    """Does the caller mark a cache breakpoint anywhere?"""
    if request.tools and any(isinstance(t, dict) and "cache_control" in t for t in request.tools):
        return True
    if isinstance(request.system, list) and any(isinstance(b, dict) and "cache_control" in b for b in request.system):
        return True
    for message in request.messages:
        content = message.content
        if isinstance(content, list) and any(isinstance(b, dict) and "cache_control" in b for b in content):
            return True
    return False


class PromptCache:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        # Fingerprints of prompt prefixes seen, oldest first -> when.
        self.seen: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.placed = 0  # breakpoints placed, for status

    def __repr__(self) -> str:
        return f"<PromptCache seen={len(self.seen)} placed={self.placed}>"

    def place(self, request: CompletionRequest, model: str) -> tuple[CompletionRequest, dict[str, Any] | None]:
        """`request` with breakpoints placed, and the report (None: none placed)."""
        if has_markers(request):
            return request, None
        minimum = min_tokens(model)
        tools = request.tools
        system = request.system
        if any(m.role == "system" for m in request.messages):
            system = None  # joined into the system prompt by the provider: no block to mark
        tools_chars = len(_encode(tools)) if tools else 0
        system_chars = (len(system) if isinstance(system, str) else len(_encode(system))) if system else 0
        chars = tools_chars + system_chars
        # Each message's prefix: its fingerprint (chained over the turns) and its length so far.
        fingerprint = hash((model, hash(_encode(tools)) if tools else 0,
                            hash(system) if isinstance(system, str) else hash(_encode(system)) if system else 0))
        prefixes = []
        for message in request.messages:
            content = message.content
            if isinstance(content, str):
                fingerprint = hash((fingerprint, message.role, content))
                chars += len(content)
            else:
                encoded = _encode(content)
                fingerprint = hash((fingerprint, message.role, encoded))
                chars += len(encoded)
            prefixes.append((fingerprint, chars))
        now = self.clock()
        seen = self.seen
        turn = None
        for i in range(len(prefixes) - 1, -1, -1):
            fp, prefix_chars = prefixes[i]
            if prefix_chars // 4 < minimum:
                break
            when = seen.get(fp)
            if when is not None and now - when <= SEEN_FOR:
                turn = i
                break
        for fp, prefix_chars in prefixes:
            if prefix_chars // 4 >= minimum:
                seen[fp] = now
                seen.move_to_end(fp)
        while len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        points: list[dict[str, Any]] = []
        if tools and tools_chars // 4 >= minimum:
            tools = [*tools[:-1], {**tools[-1], "cache_control": EPHEMERAL}]
            points.append({"at": "tools", "tokens": tools_chars // 4})
        if system and (tools_chars + system_chars) // 4 >= minimum:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
            blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
            system = blocks
            points.append({"at": "system", "tokens": (tools_chars + system_chars) // 4})
        messages = request.messages
        if turn is not None and len(points) < MAX_BREAKPOINTS:
            messages = list(messages)
            messages[turn] = _marked(messages[turn])
            points.append({"at": f"messages[{turn}]", "tokens": prefixes[turn][1] // 4})
        if not points:
            return request, None
        self.placed += len(points)
        changed: dict[str, Any] = {"messages": messages}
        if tools is not request.tools:
            changed["tools"] = tools
        if system is not request.system and system is not None:
            changed["system"] = system
        return msgspec.structs.replace(request, **changed), {"breakpoints": points, "min_tokens": minimum}


def _marked(message: Message) -> Message:
    """The message with a breakpoint on its last block."""
    content = message.content
    if isinstance(content, str):
        return Message(role=message.role, content=[{"type": "text", "text": content, "cache_control": EPHEMERAL}])
    if not content:
        return message
    return Message(role=message.role, content=[*content[:-1], {**content[-1], "cache_control": EPHEMERAL}])
