"""One HTTP/1.1 request on a kept-alive connection (h11), and how the
simulator answers it: whole, or as server-sent events a write at a time."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec


class _ClientGone(Exception):
    pass


class _Exchange:
    """One request/response on a kept-alive h11 connection."""

    def __init__(self, conn: h11.Connection, stream: anyio.abc.ByteStream) -> None:
        self.conn = conn
        self.stream = stream

    async def wait(self, seconds: float | None = None, until: anyio.Event | None = None) -> None:
        """Sleep `seconds` (or until `until` is set) while reading the
        connection, so a client that goes away ends the request at once."""
        if until is None:
            with anyio.move_on_after(math.inf if seconds is None else seconds):
                await self._read_until_closed()
            return
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await until.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            gone = False  # stays so when `until` cancels the read
            try:
                await self._read_until_closed()
            except _ClientGone:
                tg.cancel_scope.cancel()
                gone = True
        if gone:
            raise _ClientGone

    async def _read_until_closed(self) -> None:
        """Read until cancelled; raise _ClientGone at end of stream."""
        while True:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                raise _ClientGone from None
            # A client may send ahead (the next request); h11 keeps it.
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise _ClientGone from exc

    async def respond(self, status: int, doc: Any, headers: list[tuple[str, str]] | None = None,
                      content_type: str = "application/json") -> None:
        body = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
        hdrs = [("content-type", content_type), ("content-length", str(len(body))), *(headers or [])]
        await self.send(h11.Response(status_code=status, headers=hdrs))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def start_sse(self) -> None:
        await self.send(h11.Response(
            status_code=200,
            headers=[("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
        ))

    async def sse(self, data: Any, event: str | None = None, split: bool = False) -> None:
        payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
        raw = ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()
        if not split:
            await self.send(h11.Data(data=raw))
            return
        # Two writes, cut inside the first multi-byte character (or mid-event):
        # the reader must reassemble bytes, not trust write boundaries.
        cut = next((i + 1 for i, b in enumerate(raw) if b >= 0xC0), len(raw) // 2)
        await self.send(h11.Data(data=raw[:cut]))
        await self.send(h11.Data(data=raw[cut:]))


async def _next_event(conn: h11.Connection, stream: anyio.abc.ByteStream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            data = b""
        conn.receive_data(data)
