"""Limits on everything an upstream sends (and on a request it will not take), against small
hostile servers on loopback: a body counted after decompression
(`pool.max_response_bytes`: a gzip bomb stops there), one server-sent-events
line, the head (its size and its lines). Each ends in a typed error that is
not retried, the connection is closed, and the daemon's peak memory stays
bounded (its VmHWM, asserted for the bomb and the header flood). A server
that never reads the request is a WriteTimeout within pool.write_timeout.
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from claif_client import Client, UpstreamError
from claifd.answers import AnswerTimeout, AnswerTooLarge

from .conftest import DaemonProcess
from .test_transports import in_thread, make_pool, post, raw_server, read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MiB = 1024 * 1024


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """2 GiB of zeros, gzip-compressed (about 2 MB), made once."""
    if not _BOMB:
        deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(MiB)
        _BOMB.append(b"".join(deflate.compress(zeros) for _ in range(2048)) + deflate.flush())
    return _BOMB[0]


async def _bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        asked = await read_request(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    if not asked:
        return _answer_the_probe(writer)
    body = gzip_bomb()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                 b"content-length: %d\r\n\r\n" % len(body))
    try:
        writer.write(body)
        await writer.drain()
        await reader.read()
    except ConnectionError:
        pass


def _answer_the_probe(writer: asyncio.StreamWriter) -> None:
    """The health probe's GET (no body) gets a small answer: the daemon's
    peak memory is measured around the POST alone."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"data\": []}")
    writer.close()


async def _header_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if not await read_request(reader):
            return _answer_the_probe(writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        line = b"x-filler: %06d\r\n"
        for start in range(0, 200_000, 1000):
            writer.write(b"".join(line % i for i in range(start, start + 1000)))
            await writer.drain()
        writer.write(b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _big_declared(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """64 MiB, plain, of a declared length."""
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (64 * MiB))
        for _ in range(64):
            writer.write(b" " * MiB)
            await writer.drain()
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _wide_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """100 header lines of 1 KiB: each within aiohttp's and h11's own limits, 100 KiB in all."""
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-wide-%03d: %s\r\n" % (i, b"w" * 1024) for i in range(100))
                     + b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _endless_header_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(64):  # 64 MiB, if nobody stops reading
            writer.write(b"a" * MiB)
            await writer.drain()
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _endless_sse_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata: \r\n")
        for _ in range(64):  # a line of 64 MiB, then the end of the stream
            writer.write(b"%x\r\n%s\r\n" % (MiB, b"a" * MiB))
            await writer.drain()
        writer.write(b"2\r\n\n\n\r\n0\r\n\r\n")
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _big_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(64):  # 64 MiB of body, then its end
            writer.write(b"%x\r\n%s\r\n" % (MiB, b" " * MiB))
            await writer.drain()
        writer.write(b"2\r\n{}\r\n0\r\n\r\n")
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


def peak_rss(d: DaemonProcess) -> int:
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# ------------------------------------------------------------- the lanes


@pytest.mark.parametrize("handler", [_bomb, _big_chunked, _big_declared, _header_flood, _endless_header_line,
                                     _wide_head],
                         ids=["gzip-bomb", "64-MiB-body", "64-MiB-declared", "200k-header-lines", "endless-header-line",
                              "100-KiB-head"])
def test_an_answer_past_a_limit_is_cut_there(handler: Handler) -> None:
    async def run() -> None:
        async with raw_server(handler) as url:
            pool = make_pool(max_response_bytes=8 * MiB)
            with pytest.raises(AnswerTooLarge):
                await post(pool, url + "/x")
            await pool.aclose()

    asyncio.run(run())


def test_a_stream_line_that_never_ends_is_cut_at_a_mebibyte() -> None:
    async def run() -> None:
        async with raw_server(_endless_sse_line) as url:
            pool = make_pool()
            lane = pool.acquire()
            resp = await lane.send("POST", url + "/x", {"content-type": "application/json"}, b"{}")
            got = 0
            with pytest.raises(AnswerTooLarge, match="line"):
                async for text in resp.aiter_text():
                    got += len(text)
            assert got <= 1024 * 1024 + 64 * 1024
            await resp.aclose()
            pool.release(lane)
            await pool.aclose()

    asyncio.run(run())


def test_a_bomb_is_inflated_a_step_at_a_time() -> None:
    """No single step of inflating makes more than a mebibyte: the event loop
    runs between them (a step of ~1 ms), and the count stops the bomb."""

    async def run() -> None:
        async with raw_server(_bomb) as url:
            pool = make_pool()
            lane = pool.acquire()
            resp = await lane.send("POST", url + "/x", {"content-type": "application/json"}, b"{}")
            largest = total = 0
            async for chunk in resp._chunks():  # type: ignore[attr-defined]
                largest = max(largest, len(chunk))
                total += len(chunk)
                if total > 64 * MiB:
                    break
            await resp.aclose()
            pool.release(lane)
            await pool.aclose()
            assert largest <= MiB

    asyncio.run(run())


# ------------------------------------------------------------ the daemon


@pytest.mark.parametrize("handler, bound", [(_bomb, 300 * MiB), (_header_flood, 100 * MiB)],
                         ids=["2-GiB-gzip-bomb", "200k-header-lines"])
def test_the_daemons_memory_stays_bounded(daemon_factory, handler: Handler, bound: int) -> None:  # type: ignore[no-untyped-def]
    gzip_bomb()  # made before the clock of any timeout starts
    with in_thread(raw_server(handler)) as url:
        d: DaemonProcess = daemon_factory(env={"CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
                                                "OPENAI_API_KEY": "sk-test-limits-0000"})
        with Client(d.socket, timeout=60) as c:
            c.ping()
            before = peak_rss(d)
            with pytest.raises(UpstreamError, match="passed") as cut:
                c.complete("a big answer", model="openai/gpt-4o-mini")
            assert "connection was closed" in str(cut.value)
            grew = peak_rss(d) - before
            print(f"peak RSS grew {grew / MiB:.1f} MiB")
            assert grew <= bound, f"peak RSS grew {grew / MiB:.0f} MiB"
            assert c.status()["upstream"]["retries"] == 0  # a limit is not retried
            assert c.complete("still serving", model="echo/x").text == "echo: still serving"


# ----------------------------------------------------- the answer's deadline


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A byte every 0.05 s, for ever: each read is well inside the read timeout."""
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def _continue_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Interim answers (100 Continue) without end: no final answer ever comes."""
    try:
        await read_request(reader)
        while True:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


@pytest.mark.parametrize("handler", [_drip, _continue_forever], ids=["drip", "100-continue-forever"])
def test_the_whole_answer_has_a_deadline(handler: Handler) -> None:
    async def run() -> None:
        async with raw_server(handler) as url:
            pool = make_pool(read_timeout=0.5, answer_timeout=1.0)
            started = asyncio.get_running_loop().time()
            with pytest.raises(AnswerTimeout):
                await asyncio.wait_for(post(pool, url + "/x"), 5)  # a TimeoutError here: no deadline
            took = asyncio.get_running_loop().time() - started
            assert 0.9 < took < 3.0, took
            await pool.aclose()

    asyncio.run(run())


# ------------------------------------------------------- a peer that never reads


def test_a_server_that_never_reads_is_a_write_timeout() -> None:
    """The request's 64 MiB body cannot all go out: the server accepts the
    connection and never reads. The write timeout ends the call (the read
    timeout, far longer here, never started: the request was not sent)."""

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        for sock in server.sockets:  # a small receive window, so the sender fills it soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pool = make_pool(write_timeout=0.5, read_timeout=60, answer_timeout=60)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.WriteTimeout, match="write_timeout"):
            await asyncio.wait_for(post(pool, url + "/x", b"x" * (64 * MiB)), 10)  # a TimeoutError: no write timeout
        took = loop.time() - started
        assert 0.4 < took < 3.0, took
        # The lane still serves: a fresh connection for the next call.
        await pool.aclose()
        server.close()

    asyncio.run(run())
