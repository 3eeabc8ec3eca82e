"""Single-flight: one upstream call shared by identical requests in progress.

The first request for a key (the leader) starts the call as a task owned by
the cache service, not by the leader's request, so the call outlives the
leader's client if others are still waiting. Every request -- leader and
followers alike -- subscribes:

* a plain subscriber waits for the final response;
* a streaming subscriber first receives the chunks recorded so far, then the
  rest as they arrive, with the upstream's chunk boundaries (a plain flight
  is replayed as chunks at its end).

If the call fails, every subscriber gets the error. When the last
subscriber leaves before the end, the call is cancelled: nobody wants it.

The events are asyncio's (a tenth of anyio's cost to make; anyio's cancel
scopes cancel a wait on them like any other): a miss makes three.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from claif_client.protocol import CompletionResponse

from ..errors import ClaifdError, UpstreamError
from ..types import DeltaCallback
from .replay import split_for_replay

__all__ = ["Flight", "Flights"]


def _clone(error: BaseException) -> BaseException:
    """A fresh exception per subscriber (one object raised in many tasks
    would collect all their tracebacks)."""
    if isinstance(error, ClaifdError):
        return type(error)(error.message, retry_after=error.retry_after, details=error.details)
    return UpstreamError(f"upstream call failed: {type(error).__name__}")


class Flight:
    def __init__(self, key: str, streaming: bool) -> None:
        self.key = key
        self.streaming = streaming
        self.chunks: list[str] = []
        self.response: CompletionResponse | None = None
        self.error: BaseException | None = None
        self.subscribers = 0
        # Cancelled when the last subscriber leaves; its deadline is the call's.
        self.scope = anyio.CancelScope()
        self.done = asyncio.Event()
        self._progress = asyncio.Event()

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else "running"
        return f"<Flight {self.key[:12]} {state} subscribers={self.subscribers} chunks={len(self.chunks)}>"

    # ----------------------------------------------------- the leader's side

    async def record(self, text: str) -> None:
        """The upstream call's `on_delta`."""
        self.chunks.append(text)
        self._pulse()

    def finish(self, response: CompletionResponse | None, error: BaseException | None) -> None:
        self.response = response
        self.error = error if response is None else None
        if response is None and error is None:
            self.error = UpstreamError("the upstream call was cancelled")
        self.done.set()
        self._pulse()

    def _pulse(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    # ------------------------------------------------------ subscribers

    @asynccontextmanager
    async def subscription(self) -> AsyncIterator[Flight]:
        self.subscribers += 1
        try:
            yield self
        finally:
            self.subscribers -= 1
            if self.subscribers == 0 and not self.done.is_set():
                self.scope.cancel()

    async def answer(self, on_delta: DeltaCallback | None = None) -> CompletionResponse:
        """The call's response; with `on_delta`, its text too, as it arrives
        (a flight that is not streaming is replayed in pieces at its end)."""
        if on_delta is None:
            await self.done.wait()
        else:
            sent = 0
            while True:
                while sent < len(self.chunks):
                    await on_delta(self.chunks[sent])
                    sent += 1
                if self.done.is_set():
                    break
                await self._progress.wait()
        if self.response is None:
            raise _clone(self.error or UpstreamError("no response"))
        if on_delta is not None and not self.streaming:
            for piece in split_for_replay(self.response.text):
                await on_delta(piece)
        return self.response


class Flights(dict[str, Flight]):
    """The upstream calls in progress, by cache key: an identical request
    joins the call in progress instead of making its own."""

    def __init__(self) -> None:
        super().__init__()
        self.coalesced = 0

    def join(self, key: str, streaming: bool) -> tuple[Flight, bool]:
        """The flight for `key`, and whether the caller leads it: an existing
        one (coalesced), or a new one that the caller must fly and `land`."""
        flight = self.get(key)
        # A flight whose last subscriber just left is cancelled but may not
        # have landed yet: a newcomer starts a fresh one instead of joining it.
        if flight is not None and not flight.scope.cancel_called:
            self.coalesced += 1
            return flight, False
        flight = Flight(key, streaming)
        self[key] = flight
        return flight, True

    def land(self, flight: Flight) -> None:
        """The flight's call is over: later requests start their own (or hit the store)."""
        if self.get(flight.key) is flight:
            del self[flight.key]
