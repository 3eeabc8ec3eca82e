"""The thin client's Python API against the real daemon."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from claif_client import (
    AsyncClient,
    BadRequest,
    Cancelled,
    Client,
    CompletionResponse,
    DaemonUnavailable,
    NotFound,
    RateLimited,
    Timeout,
    UpstreamError,
)
from claif_client.protocol import Cancel

from .conftest import DaemonProcess, eventually

HEAVY = ("httpx", "watchfiles", "psutil", "structlog", "numpy")


def wait_idle(c: Client, timeout: float = 5.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        status = c.status()
        if status["in_flight"] == 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def test_complete_and_result_fields(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        r = c.complete([{"role": "user", "content": "hi there"}], model="echo/m", system="sys", max_tokens=50)
        assert isinstance(r, CompletionResponse)
        assert (r.text, r.model, r.cached, r.stop_reason) == ("echo: hi there", "echo/m", False, "end_turn")
        assert r.usage.input_tokens > 0 and r.usage.output_tokens == 3
        assert c.complete("a b c d", max_tokens=2).stop_reason == "max_tokens"
        assert c.daemon_version and "stream" in c.capabilities
        assert "connected" in repr(c)


def test_content_blocks(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        r = c.complete([{"role": "user", "content": [{"type": "text", "text": "blocks"}]}])
        assert r.text == "echo: blocks"


def test_stream_yields_deltas_then_response(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        stream = c.stream("one two three")
        deltas = list(stream)
        assert deltas == ["echo: ", "one ", "two ", "three"]
        assert stream.response is not None and stream.response.text == "".join(deltas)


def test_breaking_out_of_a_stream_cancels_it(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        stream = c.stream(" ".join(["w"] * 500), extra={"delay_ms": 10})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        assert wait_idle(c)["in_flight"] == 0
        # The connection is in sync afterwards: late chunks were dropped.
        assert c.complete("next").text == "echo: next"


def test_stream_and_calls_share_a_connection(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        stream = c.stream("a b c d e", extra={"delay_ms": 20})
        first = next(stream)
        assert c.complete("in between").text == "echo: in between"
        rest = list(stream)
        assert first + "".join(rest) == "echo: a b c d e"


def test_threads_share_one_client(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []
    with Client(daemon.socket) as c:

        def work(k: int) -> None:
            try:
                for j in range(50):
                    assert c.complete(f"t{k} {j}").text == f"echo: t{k} {j}"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_typed_errors(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        with pytest.raises(RateLimited) as info:
            c.complete("x", extra={"fail": "rate_limited"})
        assert info.value.code == "rate_limited"
        with pytest.raises(UpstreamError):
            c.complete("x", extra={"fail": "upstream_error"})
        with pytest.raises(BadRequest) as bad:
            c.complete("x", model="nosuch/model")
        assert "unknown provider" in str(bad.value)
        with pytest.raises(NotFound):
            c.complete("x", session="abc")
        with pytest.raises(TypeError):
            c.complete("x", not_a_field=1)


def test_client_timeout_cancels_on_daemon(daemon: DaemonProcess) -> None:
    with Client(daemon.socket, timeout=0.3) as c:
        with pytest.raises(Timeout):
            c.complete(" ".join(["w"] * 100), extra={"delay_ms": 50})
        # Still usable, and the daemon was told to stop the request.
        assert c.complete("ok").text == "echo: ok"
        assert wait_idle(c)["in_flight"] == 0


def test_unavailable_daemon(short_tmp: Path) -> None:
    with pytest.raises(DaemonUnavailable):
        Client(short_tmp / "nothing.sock").ping()


def test_openai_facade(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        resp = c.chat.completions.create(
            model="echo/gpt", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
        )
        assert resp.choices[0].message.content == "echo: hello"
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        chunks = list(c.chat.completions.create(model="echo/gpt", messages=[{"role": "user", "content": "x y"}], stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
        assert text == "echo: x y"
        assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.anyio
async def test_async_client(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.socket) as c:
        await c.ping()
        assert (await c.status())["pid"] > 0
        r = await c.complete("async hi")
        assert r.text == "echo: async hi"
        stream = c.stream("s t u")
        assert [d async for d in stream] == ["echo: ", "s ", "t ", "u"]
        assert stream.response is not None and stream.response.usage.output_tokens == 4
        # Concurrent calls multiplex over one connection.
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = (await c.complete(f"n{i}")).text

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert results == {i: f"echo: n{i}" for i in range(50)}
        resp = await c.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "q"}])
        assert resp.choices[0].message.content == "echo: q"
        chunks = [ch async for ch in await c.chat.completions.create(
            model="echo/x", messages=[{"role": "user", "content": "q"}], stream=True)]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "echo: q"


@pytest.mark.anyio
async def test_async_cancellation_cancels_on_daemon(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.socket) as c:
        with anyio.move_on_after(0.2):
            await c.complete(" ".join(["w"] * 100), extra={"delay_ms": 50})
        deadline = anyio.current_time() + 5
        while (await c.status())["in_flight"] and anyio.current_time() < deadline:
            await anyio.sleep(0.02)
        assert (await c.status())["in_flight"] == 0
        assert (await c.complete("after")).text == "echo: after"
        # A cancel seen by the daemon surfaces as Cancelled for the reader.
        stream = c.stream(" ".join(["w"] * 100), extra={"delay_ms": 20})
        assert await stream.__anext__() == "echo: "
        assert stream._rid is not None
        await c._send(Cancel(id=stream._rid))
        with pytest.raises(Cancelled):
            async for _ in stream:
                pass


@pytest.mark.anyio
async def test_async_reconnects_after_restart(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    async with AsyncClient(d.socket, timeout=10) as c:
        await c.ping()
        assert d.stop() == 0
        d.start()
        assert (await c.complete("back")).text == "echo: back"
    assert d.stop() == 0


def test_thin_client_imports_nothing_heavy() -> None:
    code = (
        "import sys, claif_client\n"
        "from claif_client import Client\n"
        "import claif_client.cli as cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'anyio' not in sys.modules, 'the sync client and CLI should not load anyio'\n"
        "from claif_client import AsyncClient\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_quick_reply_is_not_held_up_by_a_slow_request_on_the_same_client(daemon: DaemonProcess) -> None:
    # Threads share one connection; whichever thread reads files the others'
    # replies. A ping must not wait for the slow request's bytes.
    with Client(daemon.socket, timeout=10) as c, Client(daemon.socket) as watcher:
        slow = threading.Thread(target=lambda: pytest.raises(Cancelled, c.complete, "w", extra={"delay_ms": 20_000}))
        slow.start()
        assert eventually(lambda: watcher.status()["in_flight"] == 1)
        # The slow request's thread is the reader now, so the quick reply
        # must be handed over by it (the case that used to wait). The quick
        # request takes 200 ms, so its thread is surely waiting when its
        # reply comes (a ping's reply could beat the thread to its wait).
        assert eventually(lambda: c._io.read_lock.locked())
        quick: dict[str, str] = {}
        pinger = threading.Thread(target=lambda: quick.update(text=c.complete("quick", extra={"delay_ms": 200}).text),
                                  daemon=True)  # daemon: a hung one must not hold up the run
        pinger.start()
        pinger.join(timeout=3.0)
        assert not pinger.is_alive(), "the quick reply waited behind the slow request"
        assert quick["text"] == "echo: quick"
        watcher_status = watcher.status()
        assert watcher_status["in_flight"] == 1  # the slow one is still running
        c._send(Cancel(id=max(c._demux.mailboxes)))  # end it
        slow.join(timeout=10)
        assert not slow.is_alive()


@pytest.mark.anyio
async def test_async_quick_reply_is_not_held_up_by_a_slow_request(daemon: DaemonProcess) -> None:
    # The slow request's task is the only one reading `c` when the ping
    # arrives (another client watches the daemon), so the ping's reply must
    # be handed over by that reader.
    async with AsyncClient(daemon.socket, timeout=10) as c, AsyncClient(daemon.socket) as watcher:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: c.complete("w", extra={"delay_ms": 20_000}))
            while (await watcher.status())["in_flight"] != 1:
                await anyio.sleep(0.01)
            with anyio.fail_after(2):
                await c.ping()
            tg.cancel_scope.cancel()


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    """`_sync.py` is `_async.py` without `await` (client/scripts/unasync.py): never edited by hand."""
    script = Path(__file__).resolve().parent.parent / "client" / "scripts" / "unasync.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
