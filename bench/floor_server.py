"""The raw floor: a minimal echo server with claifd's framing and event loop.

It answers each length-prefixed frame with the same frame, from an asyncio
protocol on uvloop, doing nothing else. Round trips against it measure the
kernel, the event loop and the client, i.e. what no daemon can go below.

    python bench/floor_server.py SOCKET_PATH
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                break
            self.transport.write(bytes(buf[: 4 + size]))  # type: ignore[attr-defined]
            del buf[: 4 + size]


async def main(path: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(Echo, path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        os.unlink(sys.argv[1])
    except FileNotFoundError:
        pass
    uvloop.run(main(sys.argv[1]))
