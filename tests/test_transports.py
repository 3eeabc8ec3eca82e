"""The upstream lane itself (aiohttp, under the pool), against the simulator
and against small HTTP servers that misbehave on purpose, over real loopback
sockets.

The daemon-level suites (test_upstream, test_cache_e2e) show what the
providers do with the lane; these show the lane's own promises: kept-alive
connections reused and expired, the connection limit, the timeouts, the
failures typed as httpx's, a half-read answer closing its connection, and
HTTP's framings (chunked, read-until-close, interim answers, gzip) and TLS.
"""

from __future__ import annotations

import asyncio
import gzip
import queue
import ssl
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec
import pytest
import trustme

from claifd.config import build_config
from claifd.pool import HttpPool

from .conftest import Sim

BODY = msgspec.json.encode({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi lane"}]})
HEADERS = {"authorization": "Bearer sk-lane", "content-type": "application/json"}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_pool(**settings: object) -> HttpPool:
    return HttpPool(build_config({"pool": settings}).pool)


async def post(pool: HttpPool, url: str, body: bytes = BODY) -> tuple[int, bytes]:
    lane = pool.acquire()
    try:
        resp = await lane.send("POST", url, HEADERS, body)
        return resp.status_code, await resp.aread()
    finally:
        pool.release(lane)


@asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An HTTP server of a few lines, on a free loopback port: its base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()


T = TypeVar("T")


@contextmanager
def in_thread(server: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """An async server (`raw_server(...)`, a proxy) run in a thread of its own
    with its own loop, for a daemon in another process to call: what it yields."""
    loop = asyncio.new_event_loop()
    ready: queue.Queue[T] = queue.Queue()
    stop = asyncio.Event()

    async def serve() -> None:
        async with server as value:
            ready.put(value)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def test_kept_alive_connections_are_reused(sim: Sim) -> None:
    async def run() -> None:
        pool = make_pool()
        for _ in range(20):
            status, body = await post(pool, sim.url + "/v1/chat/completions")
            assert status == 200 and b"Simulated reply to: hi lane" in body
        await pool.aclose()

    asyncio.run(run())
    stats = sim.stats()
    assert stats["requests"] == 20 and stats["connections_opened"] == 1, stats


def test_the_connection_limit_holds_and_waiters_get_a_turn(sim: Sim) -> None:
    sim.configure(latency_ms=150)

    async def run() -> None:
        pool = make_pool(max_connections=2)
        results = await asyncio.gather(*[post(pool, sim.url + "/v1/chat/completions") for _ in range(6)])
        assert [status for status, _ in results] == [200] * 6
        await pool.aclose()

    asyncio.run(run())
    stats = sim.stats()
    assert stats["requests"] == 6 and stats["connections_opened"] == 2, stats


def test_a_silent_upstream_is_a_read_timeout(sim: Sim) -> None:
    sim.configure(hold=True)

    async def run() -> None:
        pool = make_pool(read_timeout=0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(post(pool, sim.url + "/v1/chat/completions"), 5)
        assert asyncio.get_running_loop().time() - started < 2.0
        await pool.aclose()

    try:
        asyncio.run(run())
    finally:
        sim.http.post("/_sim/release")


def test_a_refused_connection_is_a_connect_error() -> None:
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = make_pool()
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await post(pool, f"http://127.0.0.1:{port}/v1/chat/completions")
        await pool.aclose()

    asyncio.run(run())


def test_a_tls_handshake_that_never_ends_is_a_connect_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers the ClientHello

    async def run() -> None:
        async with raw_server(silent) as url:
            pool = make_pool(connect_timeout=0.3)
            with pytest.raises(httpx.ConnectTimeout):
                await post(pool, url.replace("http://", "https://") + "/x")
            await pool.aclose()

    asyncio.run(run())


def test_waiting_too_long_for_a_free_connection_is_a_timeout(sim: Sim) -> None:
    sim.configure(latency_ms=800)

    async def run() -> None:
        pool = make_pool(max_connections=1, pool_timeout=0.2)
        first = asyncio.ensure_future(post(pool, sim.url + "/v1/chat/completions"))
        await asyncio.sleep(0.1)
        # aiohttp counts the wait for a pooled connection as connecting.
        with pytest.raises(httpx.ConnectTimeout):
            await post(pool, sim.url + "/v1/chat/completions")
        assert (await first)[0] == 200
        await pool.aclose()

    asyncio.run(run())


def test_an_answer_closed_half_read_closes_its_connection(sim: Sim) -> None:
    sim.configure(token_delay_ms=50)
    stream = msgspec.json.encode({"model": "m", "stream": True, "messages": [
        {"role": "user", "content": "one two three four five six seven eight nine ten"}]})

    async def run() -> None:
        pool = make_pool()
        lane = pool.acquire()
        resp = await lane.send("POST", sim.url + "/v1/chat/completions", HEADERS, stream)
        async for text in resp.aiter_text():
            assert "data:" in text
            break
        await resp.aclose()
        pool.release(lane)
        await asyncio.sleep(0.1)
        # The simulator saw the client go mid-stream, while the pool is still open.
        stats = sim.wait_for(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
        assert stats["disconnects"] == 1 and stats["in_flight"] == 0, stats
        await pool.aclose()

    asyncio.run(run())


async def _chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\n{\"a\":\r\n4\r\n 12}\r\n0\r\n\r\n")
        await writer.drain()


async def _until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"a\": ")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"12}")
    writer.close()


async def _interim_then_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = gzip.compress(b'{"a": 12}')
    while True:
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()


async def _raw_deflate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # "deflate" without its zlib wrapper, as some servers send it
    body = deflate.compress(b'{"a": 12}') + deflate.flush()
    while True:
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: deflate\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()


@pytest.mark.parametrize("handler", [_chunked, _until_close, _interim_then_gzip, _raw_deflate],
                         ids=["chunked", "until-close", "interim-and-gzip", "raw-deflate"])
def test_http_framings(handler: Handler) -> None:
    async def run() -> None:
        async with raw_server(handler) as url:
            pool = make_pool()
            for _ in range(2):  # the second on a reused connection, or a new one after a close
                status, body = await post(pool, url + "/x")
                assert status == 200 and msgspec.json.decode(body) == {"a": 12}
            await pool.aclose()

    asyncio.run(run())


async def _malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 two hundred OK\r\n\r\n")
    await writer.drain()
    await reader.read()


async def _cut_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": ")
    await writer.drain()
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


@pytest.mark.parametrize("handler", [_malformed, _cut_mid_body, _hang_up], ids=["malformed", "cut-mid-body", "hang-up"])
def test_broken_answers_are_protocol_errors(handler: Handler) -> None:
    async def run() -> None:
        async with raw_server(handler) as url:
            pool = make_pool()
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await post(pool, url + "/x")
            await pool.aclose()

    asyncio.run(run())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    connections = 0

    async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.close()  # kept alive by the headers, closed by the server soon after

    async def run() -> None:
        async with raw_server(close_after_answer) as url:
            pool = make_pool()
            for _ in range(3):
                assert await post(pool, url + "/x") == (200, b"ok")
                await asyncio.sleep(0.1)
            await pool.aclose()

    asyncio.run(run())
    assert connections == 3


def test_idle_connections_close_after_keepalive_expiry(sim: Sim) -> None:
    async def run() -> None:
        pool = make_pool(keepalive_expiry=0.2)
        before = sim.stats()["connections_open"]  # the stats client's own
        await post(pool, sim.url + "/v1/chat/completions")
        await asyncio.sleep(0.5)
        stats = sim.stats()
        assert stats["connections_open"] == before, stats
        await post(pool, sim.url + "/v1/chat/completions")
        await pool.aclose()

    asyncio.run(run())
    assert sim.stats()["connections_opened"] == 2


def test_max_keepalive_zero_opens_a_connection_a_request(sim: Sim) -> None:
    async def run() -> None:
        pool = make_pool(max_keepalive=0)
        for _ in range(3):
            assert (await post(pool, sim.url + "/v1/chat/completions"))[0] == 200
        await pool.aclose()

    before = sim.stats()["connections_opened"]
    asyncio.run(run())
    assert sim.stats()["connections_opened"] - before == 3  # the stats client keeps its one


def test_a_header_that_would_split_the_request_is_refused(sim: Sim) -> None:
    async def run() -> None:
        pool = make_pool()
        lane = pool.acquire()
        with pytest.raises((httpx.LocalProtocolError, ValueError)):
            await lane.send("POST", sim.url + "/v1/chat/completions",
                            {"authorization": "Bearer sk\r\nx-injected: 1"}, BODY)
        pool.release(lane)
        await pool.aclose()

    asyncio.run(run())
    assert sim.stats()["requests"] == 0


def test_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the pool's context trusts the test CA

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async def run() -> None:
        async with raw_server(answer, tls=server_tls) as url:
            pool = make_pool()
            assert await post(pool, url + "/echo", b"over tls") == (200, b"over tls")
            assert await post(pool, url + "/echo", b"again") == (200, b"again")
            await pool.aclose()

    asyncio.run(run())


def test_a_slow_reader_of_a_big_stream_is_no_read_timeout() -> None:
    """The upstream sends 4 MiB at once; the reader stops for twice the read
    timeout after its first piece (reading pauses while it lags). No byte is
    lost, and the read timeout counts from the last byte the socket gave,
    not from the reader's pace."""
    payload = b"".join(b"data: %07d\n\n" % i for i in range(4 * 1024 * 1024 // 15))

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
                     % len(payload) + payload)
        await writer.drain()
        await reader.read()

    async def run() -> None:
        async with raw_server(flood) as url:
            pool = make_pool(read_timeout=0.3)
            lane = pool.acquire()
            resp = await lane.send("POST", url + "/x", HEADERS, BODY)
            got = []
            started = asyncio.get_running_loop().time()
            async for text in resp.aiter_text():
                if not got:
                    cpu = time.process_time()
                    await asyncio.sleep(0.6)  # a slow consumer, with the socket's data waiting
                    assert time.process_time() - cpu < 0.2, "the wait was spent spinning"
                got.append(text)
            assert asyncio.get_running_loop().time() - started > 0.6
            await resp.aclose()
            pool.release(lane)
            assert "".join(got).encode() == payload
            await pool.aclose()

    asyncio.run(run())


def test_a_kept_alive_connection_found_dead_is_replaced_at_once() -> None:
    """The server answers the first request on a connection and closes on the
    second without a byte (the idle-timeout race, every time): the request is
    sent again at once on a new connection, no backoff."""
    connections = 0

    async def one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await read_request(reader)  # the reuse: closed before any byte of its answer
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def run() -> None:
        async with raw_server(one_answer_per_connection) as url:
            pool = make_pool()
            started = asyncio.get_running_loop().time()
            for _ in range(4):
                assert await post(pool, url + "/x") == (200, b"ok")
            assert asyncio.get_running_loop().time() - started < 1.0  # no backoff anywhere
            assert pool.stats()["stale_reconnects"] == 3
            await pool.aclose()

    asyncio.run(run())
    assert connections == 4  # the first, and a new one for each reuse found dead


def test_idle_connections_closed_by_the_server_cost_no_backoff(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    """A server that closes idle connections after 1 s, called every ~1 s
    (the reuse races the close): every call answered, 0 backoff retries."""

    async def idle_timeout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await asyncio.wait_for(read_request(reader), 1.0)
                doc = msgspec.json.encode({"id": "x", "object": "chat.completion", "model": "m", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": body.decode()[-20:]},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % len(doc) + doc)
                await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    from claif_client import Client

    with in_thread(raw_server(idle_timeout)) as url:
        d = daemon_factory(env={"CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
                                "OPENAI_API_KEY": "sk-test-stale-0000", "CLAIF_HEALTH__INTERVAL": "3600"})
        with Client(d.socket) as c:
            for i in range(5):
                c.complete(f"call {i}", model="openai/m", cache=False)
                time.sleep(0.95 + 0.02 * i)  # around the server's idle timeout
            status = c.status()
        assert status["upstream"]["retries"] == 0, status["upstream"]


def _stray_server(glued: bool) -> Handler:
    """Answers each request with its own body, and after the first one sends
    a second answer nobody asked for: in the same write (glued) or 50 ms later."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
            stray = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTRAY"
            if first and glued:
                writer.write(answer + stray)
            else:
                writer.write(answer)
            await writer.drain()
            if first and not glued:
                await asyncio.sleep(0.05)
                writer.write(stray)
                await writer.drain()
            first = False

    return handler


@pytest.mark.parametrize("glued", [True, False], ids=["glued", "50ms-later"])
def test_an_answer_nobody_asked_for_is_never_served(glued: bool) -> None:
    async def run() -> None:
        async with raw_server(_stray_server(glued)) as url:
            pool = make_pool()
            for i in range(6):
                assert await post(pool, url + "/x", b"asked %d" % i) == (200, b"asked %d" % i)
                await asyncio.sleep(0.1)  # the late stray answer is in by now
            await pool.aclose()

    asyncio.run(run())
