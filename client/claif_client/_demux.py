"""Sans-IO reply demultiplexing shared by `Client` and `AsyncClient`.

Bytes from the daemon go in; each decoded reply lands in the mailbox of the
request it answers. Requests the caller gave up on (timeout, early exit from
a stream) are "abandoned": their late frames are dropped until the terminal
one arrives, so the connection stays in sync without reading them.
"""

from __future__ import annotations

from collections import deque

import msgspec

from .errors import ProtocolError, RemoteError, remote_error
from .framing import FrameDecoder, FrameTooLarge
from .protocol import Done, Error, Pong, Reply, Result, reply_decoder

__all__ = ["Demux", "TERMINAL"]

TERMINAL = (Pong, Result, Done, Error)


class Demux:
    def __init__(self) -> None:
        self._frames = FrameDecoder()
        self._decoder = reply_decoder()
        self.mailboxes: dict[int, deque[Reply]] = {}
        self.abandoned: set[int] = set()

    def __repr__(self) -> str:
        return f"<Demux in_flight={len(self.mailboxes)} abandoned={len(self.abandoned)}>"

    def open(self, rid: int) -> deque[Reply]:
        box: deque[Reply] = deque()
        self.mailboxes[rid] = box
        return box

    def others_in_flight(self, rid: int) -> int:
        return len(self.mailboxes) - (rid in self.mailboxes)

    def feed(self, data: bytes) -> RemoteError | None:
        """File the replies in `data`; return a connection-level error (id 0), if any.

        Raises `ProtocolError` for bytes that are not valid frames.
        """
        try:
            replies = [self._decoder.decode(p) for p in self._frames.feed(data)]
        except (FrameTooLarge, msgspec.DecodeError) as exc:
            raise ProtocolError(f"bad frame from the daemon: {exc}") from exc
        failure = None
        for reply in replies:
            rid = reply.id
            if rid in self.abandoned:
                if isinstance(reply, TERMINAL):
                    self.abandoned.discard(rid)
                continue
            box = self.mailboxes.get(rid)
            if box is not None:
                box.append(reply)
            elif rid == 0 and isinstance(reply, Error):
                failure = remote_error(reply.code, reply.message, reply.retry_after, reply.details)
        return failure

    def finish(self, rid: int) -> None:
        self.mailboxes.pop(rid, None)

    def abandon(self, rid: int) -> bool:
        """Stop waiting for `rid`. True when the daemon may still be working on it."""
        box = self.mailboxes.pop(rid, None)
        if box and isinstance(box[-1], TERMINAL):
            return False
        self.abandoned.add(rid)
        return True

    def reset(self) -> None:
        """The connection is gone: start clean for the next one."""
        self._frames = FrameDecoder()
        self.abandoned.clear()


def terminal_result(reply: Reply) -> Reply:
    """The terminal reply of a unary request, or the exception it stands for."""
    if isinstance(reply, Error):
        raise remote_error(reply.code, reply.message, reply.retry_after, reply.details)
    if not isinstance(reply, TERMINAL):
        raise ProtocolError(f"unexpected {type(reply).__name__} frame for a unary request")
    return reply
