"""Where a request goes: a table from message type to handler.

Each feature registers the handlers for the requests it owns (completions,
the cache, sessions, configuration, monitoring), so the server knows frames
and connections and nothing about features:

    inline  answered inside `data_received`, no task, no await (ping, status,
            a memory-tier cache hit, a session already in memory). It returns
            the reply to write, a `Start` (the server runs it as a task), or
            None when it wrote the reply itself.
    task    runs as a task in the server's request task group, under a cancel
            scope that a Cancel frame, a client disconnect or the request's
            deadline cancels. It returns the terminal reply (or None when it
            has nothing more to say), and may stream frames before it through
            `conn.send` (which waits while the client is not reading).

An exception from either becomes one error frame (`errors.error_frame`).

To add a request type: its Struct in `client/claif_client/protocol.py` (and a
client method), and one `dispatch.inline(...)` or `dispatch.task(...)` in the
feature module that handles it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

import msgspec

if TYPE_CHECKING:
    from .callers import Caller

__all__ = ["Conn", "Dispatch", "InlineHandler", "TaskHandler", "Route", "Start"]


class Conn(Protocol):
    """What a handler sees of the connection its request came on."""

    cid: int
    # The caller's project layer (callers.py), or None: the daemon's configuration.
    caller: Caller | None

    @property
    def cwd(self) -> str:
        """Where the caller runs ("" if it did not say)."""

    def write(self, msg: msgspec.Struct) -> None:
        """Queue a reply now (small, terminal replies)."""

    def write_raw(self, frames: bytes) -> None:
        """Queue already encoded frames (a cache hit's stored bytes)."""

    async def send(self, msg: msgspec.Struct) -> None:
        """Write, waiting while the client is not reading (backpressure)."""



class Start(NamedTuple):
    """An inline handler's answer when the request needs a task: the server
    runs `handler(msg, conn, arg)`; `timeout`: its deadline in seconds;
    `recorded`: the handler records the request in the metrics itself (the
    completion pipeline does), the server does not."""

    msg: Any
    handler: TaskHandler
    arg: Any = None
    timeout: float | None = None
    recorded: bool = False


# (msg, conn) -> the reply to write, a task to start, or None.
InlineHandler = Callable[[Any, Conn], "msgspec.Struct | Start | None"]
# (msg, conn, arg) -> the terminal reply, or None.
TaskHandler = Callable[[Any, Conn, Any], Awaitable["msgspec.Struct | None"]]


@dataclass(frozen=True, slots=True)
class Route:
    # The request's name in metrics (its wire tag: "complete", "status"...).
    method: str
    inline: InlineHandler | None = None
    task: TaskHandler | None = None
    # The inline handler records its own requests in the metrics (it knows
    # more than the server: a cache hit's model); the server does not.
    records: bool = False


class Dispatch:
    def __init__(self) -> None:
        self.routes: dict[type, Route] = {}

    def __repr__(self) -> str:
        inline = sum(1 for r in self.routes.values() if r.inline is not None)
        return f"<Dispatch routes={len(self.routes)} inline={inline}>"

    def inline(self, kind: type, handler: InlineHandler, *, records: bool = False) -> None:
        self._add(kind, Route(_method(kind), inline=handler, records=records))

    def task(self, kind: type, handler: TaskHandler) -> None:
        self._add(kind, Route(_method(kind), task=handler))

    def _add(self, kind: type, route: Route) -> None:
        if kind in self.routes:
            raise ValueError(f"{kind.__name__} already has a handler")
        self.routes[kind] = route

    def decoder(self, *more: type) -> msgspec.msgpack.Decoder[Any]:
        """One typed decoder for every registered request and `more` (a tagged union)."""
        return msgspec.msgpack.Decoder(Union[(*self.routes, *more)])


def _method(kind: type) -> str:
    config = getattr(kind, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return tag if isinstance(tag, str) else kind.__name__.lower()
