"""A streamed completion of the client API, written once: `AsyncCompletionStream`
here, `CompletionStream` in `_sync_stream.py`, generated from this file by
`client/scripts/unasync.py` (see `_async.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._demux import terminal_result
from .errors import ProtocolError
from .protocol import (
    Chunk,
    Complete,
    CompletionRequest,
    CompletionResponse,
    Done,
)

if TYPE_CHECKING:
    from ._async import AsyncClient


class AsyncCompletionStream:
    """Async iterator of text deltas; `response` holds the final message at the end."""

    def __init__(self, client: AsyncClient, request: CompletionRequest) -> None:
        self._client = client
        self._request = request
        self._rid: int | None = None
        self._finished = False
        self.response: CompletionResponse | None = None
        # For a send within a session: {session_id, message_index, dropped, model}.
        self.info: Any = None

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def _start(self) -> None:
        """Send the request (the I/O layer decides when: see `opened`)."""
        client = self._client
        self._rid = client._protocol.next_id()
        client._demux.open(self._rid)
        try:
            await client._io.send(Complete(id=self._rid, request=self._request, stream=True))
        except BaseException:
            client._demux.finish(self._rid)
            self._finished = True
            raise

    async def __anext__(self) -> str:
        client = self._client
        if self._rid is None:
            await self._start()
        rid = self._rid
        assert rid is not None
        while not self._finished:
            try:
                reply = await client._io.next_reply(rid)
            except BaseException:
                await self.aclose()
                raise
            if isinstance(reply, Chunk):
                if reply.text:
                    return reply.text
                continue
            self._finished = True
            client._demux.finish(rid)
            done = terminal_result(reply)
            if not isinstance(done, Done):
                raise ProtocolError(f"unexpected {type(done).__name__} frame ending a stream")
            self.response = done.response
            self.info = done.value
        raise StopAsyncIteration

    async def until_done(self) -> CompletionResponse:
        async for _ in self:
            pass
        assert self.response is not None
        return self.response

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            if self._rid is not None:
                await self._client._io.give_up(self._rid)

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # An iterator dropped half-way must not leave the daemon streaming.
        if not self._finished and self._rid is not None:
            self._client._io.discard(self._rid)
