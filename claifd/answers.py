"""What the daemon takes from an upstream, on any HTTP client: an answer
read within limits (`BoundedBody`: its size after decompression, one
stream line, its head), and the failures that are not worth a retry or
need one at once (`AnswerTooLarge`, `AnswerTimeout`, `StaleConnection`)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterable, Mapping

import httpx


class StaleConnection(httpx.ReadError):
    """The connection ended (reset, a broken pipe, or closed) before any byte
    of the answer: the server had closed it while it sat idle in the pool."""


def stale_connection(exc: BaseException) -> bool:
    """Whether a failure before the answer's head means the request never
    reached a server (the peer had already closed the connection)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionResetError, BrokenPipeError)):
            return True
        if "without sending a response" in str(seen) or "Server disconnected" in str(seen):
            return True  # httpcore's and aiohttp's words for the end before any byte
        seen = seen.__cause__ or seen.__context__
    return False


class AnswerTimeout(httpx.ReadTimeout):
    """The whole answer, head and body, took longer than `pool.answer_timeout`
    (a server that drips a byte at a time, or sends interim answers without end)."""


class AnswerTooLarge(httpx.TransportError):
    """An answer past a limit (`pool.max_response_bytes` after decompression,
    one server-sent-events line, the head): its connection is closed, and no
    retry would make it smaller."""


# One server-sent-events line (a provider's largest event is a few KiB).
MAX_SSE_LINE = 1024 * 1024


# An answer's head: its size and its header lines (aiohttp's and h11's own
# limits stop a longer one sooner, at a bounded cost).
MAX_HEAD_BYTES = 64 * 1024


MAX_HEAD_LINES = 128


def check_head(raw: Iterable[tuple[bytes, bytes]]) -> AnswerTooLarge | None:
    """An answer's header lines against MAX_HEAD_BYTES and MAX_HEAD_LINES."""
    lines = size = 0
    for name, value in raw:
        lines += 1
        size += len(name) + len(value) + 4
    if lines > MAX_HEAD_LINES or size > MAX_HEAD_BYTES:
        return AnswerTooLarge(f"the answer's head passed {MAX_HEAD_LINES} lines or {MAX_HEAD_BYTES} bytes "
                              f"({lines} lines, {size} bytes)")
    return None


class BoundedBody:
    """`aread`, `aiter_text` and `content` over a lane's decoded chunks
    (`_chunks`), counted against `max_bytes` as they arrive: an answer past
    the limit is cut there, whatever it was on the wire (a gzip bomb stops at
    the limit). `_abort` closes the connection."""

    __slots__ = ("_content", "max_bytes", "charset")
    # Set by each lane's answer (in its own slots).
    status_code: int
    headers: Mapping[str, str]
    reason_phrase: str

    def __init__(self, max_bytes: int, charset: str) -> None:
        self._content: bytes | None = None
        self.max_bytes = max_bytes
        self.charset = charset

    def _chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Give the connection back (the body read to its end) or close it."""
        raise NotImplementedError

    def _too_large(self, what: str) -> AnswerTooLarge:
        self._abort()
        return AnswerTooLarge(what)

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            body = bytearray()
            limit = self.max_bytes
            async for chunk in self._chunks():
                body += chunk
                if len(body) > limit:
                    raise self._too_large(f"the answer passed pool.max_response_bytes ({limit} bytes)")
            self._content = bytes(body)
        return self._content

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body as text, chunk by chunk as it arrives (server-sent
        events), no line longer than MAX_SSE_LINE characters."""
        decoder = codecs.getincrementaldecoder(self.charset)(errors="replace")
        total = 0
        line = 0  # characters since the last line break
        limit = self.max_bytes
        async for chunk in self._chunks():
            total += len(chunk)
            if total > limit:
                raise self._too_large(f"the answer passed pool.max_response_bytes ({limit} bytes)")
            text = decoder.decode(chunk)
            end = max(text.rfind("\n"), text.rfind("\r"))
            line = len(text) - end - 1 if end >= 0 else line + len(text)
            if line > MAX_SSE_LINE:
                raise self._too_large(f"a line of the stream passed {MAX_SSE_LINE} characters")
            if text:
                yield text
        text = decoder.decode(b"", final=True)
        if text:
            yield text


# What a lane's `send` returns, on either transport: the body unread until
# `aread` (which releases the connection) or `aiter_text`; `aclose` always,
# which closes a connection whose body was not read to its end.
UpstreamResponse = BoundedBody
