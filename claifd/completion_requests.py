"""The main socket's completion requests: `complete` (the hot path) and
`batch`, on the one pipeline (completions.py).

A repeated `complete` is answered in `data_received` itself: its raw bytes
find the cache key (`hot_key`: no decoding, validating, routing or hashing),
the memory tier the answer, whose stored msgpack is spliced into the reply
frame (`cached_frames`). Anything else runs as a task into a `FrameSink`:
`Chunk` frames as text arrives, then `Done`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import structlog

from claif_client.protocol import (
    Batch,
    BatchItem,
    BatchProgress,
    Chunk,
    Complete,
    CompletionRequest,
    CompletionResponse,
    Done,
    Error,
    ErrorCode,
    Result,
    encode_frame,
)

from .cache.entry import MemEntry
from .cache.replay import replay_chunks
from .callers import Caller
from .completions import Completions, Prepared, report
from .config import Config
from .dispatch import Conn, Dispatch, Start
from .errors import BadRequest, ClaifdError, error_frame, error_info
from .optimizer import Optimized
from .request_log import CompletionLog

__all__ = ["CompletionRequests", "cached_frames"]

log = structlog.get_logger("claifd.completions")

# A batch is one frame (16 MiB) anyway; this bounds the tasks one call spawns.
MAX_BATCH_ITEMS = 100_000
ProgressCallback = Callable[[BatchProgress], Awaitable[None]]
# Distinct recent requests whose cache keys the hot path remembers.
HOT_KEYS = 4096


class _CompleteRaw(msgspec.Struct, tag="complete", tag_field="type"):
    """`Complete` with its request left undecoded: on a repeated request the
    raw bytes alone find the cache key (see `hot_key`), so a hit skips
    decoding, validating, routing and hashing the request."""

    id: int
    request: msgspec.Raw
    stream: bool = False


class _DoneRaw(msgspec.Struct, tag="done", tag_field="type"):
    """`Done` with a response that is already msgpack (a cache hit): the
    same bytes on the wire as `Done`, without encoding the response again."""

    id: int
    response: msgspec.Raw


_request_decoder = msgspec.msgpack.Decoder(CompletionRequest)


class FrameSink:
    """A socket request's answer: `Chunk` frames as text arrives (when it
    streams), then `Done`."""

    __slots__ = ("conn", "rid", "streaming")

    def __init__(self, conn: Conn, rid: int, streaming: bool) -> None:
        self.conn = conn
        self.rid = rid
        self.streaming = streaming

    async def delta(self, text: str) -> None:
        await self.conn.send(Chunk(id=self.rid, text=text))

    async def done(self, response: CompletionResponse) -> None:
        await self.conn.send(Done(id=self.rid, response=response))


class CompletionRequests:
    def __init__(self, completions: Completions) -> None:
        self.completions = completions
        self.state = completions.state
        self.cache = completions.cache
        # Raw request bytes -> cache key, for requests already prepared once
        # under the configuration in force (the hot path's shortcut).
        self._hot_keys: dict[bytes, str] = {}

    def __repr__(self) -> str:
        return f"<CompletionRequests hot_keys={len(self._hot_keys)}>"

    def reconfigure(self, config: Config) -> None:
        """Any configuration change: routes, aliases, cache settings and
        defaults may all differ, so remembered keys are forgotten."""
        self._hot_keys.clear()

    def register(self, dispatch: Dispatch) -> None:
        # on_complete records its own requests (it knows the model of a hit).
        dispatch.inline(_CompleteRaw, self.on_complete, records=True)
        dispatch.task(Batch, self.batch_task)

    def on_complete(self, msg: _CompleteRaw, conn: Conn) -> Error | Start | None:
        """The hot path: a memory-tier hit is answered right here."""
        started = time.perf_counter()
        if self.state.draining:
            return self._refused(Error(id=msg.id, code=ErrorCode.SHUTTING_DOWN, message="the daemon is shutting down"),
                                 started)
        caller = conn.caller
        key = self.hot_key(msg.request, caller)
        if key is not None and (entry := self.cache.lookup_memory(key)) is not None:
            conn.write_raw(cached_frames(msg.id, msg.stream, entry))
            self.completions.record_hit(entry, started, "socket", (bytes(msg.request), "socket"))
            return None
        try:
            request = _request_decoder.decode(msg.request)
        except msgspec.DecodeError as exc:
            return self._refused(Error(id=msg.id, code=ErrorCode.BAD_REQUEST, message=f"invalid request: {exc}"),
                                 started)
        complete = Complete(id=msg.id, request=request, stream=msg.stream)
        if request.session is not None:
            return Start(complete, self.session_task, None, self.completions.request_timeout(request, caller),
                         recorded=True)
        try:
            prepared = self.completions.prepare(request, "socket", caller)
        except ClaifdError as exc:  # anything else is the server's to log as internal
            return self._refused(error_frame(msg.id, exc), started)
        self.remember_key(msg.request, prepared)
        entry = self.completions.try_hit(prepared, started)
        if entry is not None:
            conn.write_raw(cached_frames(msg.id, msg.stream, entry, prepared.optimized))
            return None
        return Start(complete, self.complete_task, prepared, prepared.timeout, recorded=True)

    def _refused(self, error: Error, started: float) -> Error:
        self.completions.refused(error.code, started)
        return error

    async def complete_task(self, msg: Complete, conn: Conn, prepared: Prepared) -> None:
        await self.completions.run(prepared, FrameSink(conn, msg.id, msg.stream), memory_probed=True)

    async def session_task(self, msg: Complete, conn: Conn, _: None) -> Done:
        on_delta = None
        if msg.stream:

            async def on_delta(text: str) -> None:
                await conn.send(Chunk(id=msg.id, text=text))

        response, info = await self.completions.session_send(msg.request, on_delta, "socket", conn.caller)
        return Done(id=msg.id, response=response, value=info)

    async def batch_task(self, msg: Batch, conn: Conn, _: None) -> Result:
        async def on_progress(progress: BatchProgress) -> None:
            await conn.send(Chunk(id=msg.id, data=progress))

        items = await self.batch(msg.requests, msg.concurrency, on_progress, msg.stream_results, conn.caller)
        if len(msg.requests) >= _LARGE_BATCH:
            self.completions.state.tasks.spawn(_give_memory_back(self.completions.request_log))
        if msg.stream_results:
            failed = sum(1 for item in items if item.error is not None)
            return Result(id=msg.id, value={"total": len(msg.requests), "ok": len(msg.requests) - failed,
                                            "failed": failed})
        return Result(id=msg.id, value=items)

    async def batch(
        self, requests: list[CompletionRequest], concurrency: int | None, on_progress: ProgressCallback,
        stream_results: bool = False, caller: Caller | None = None,
    ) -> list[BatchItem]:
        """Every request, at most `concurrency` at a time; results in input order.

        One item's failure is recorded in its `BatchItem.error` and does not
        affect the others. With `stream_results` each item goes out with its
        progress and is not kept: the list returned holds only the failed
        items' errors (responses dropped), for counting.
        """
        if not requests:
            return []
        if len(requests) > MAX_BATCH_ITEMS:
            raise BadRequest(f"a batch holds at most {MAX_BATCH_ITEMS} requests, got {len(requests)}")
        config = self.completions.config if caller is None else caller.config
        limit = concurrency if concurrency is not None else config.batch.concurrency
        if limit < 1:
            raise BadRequest("batch concurrency must be at least 1")
        limiter = anyio.CapacityLimiter(limit)
        results: list[BatchItem | None] = [None] * len(requests)
        done = 0

        async def run_one(index: int, request: CompletionRequest) -> None:
            nonlocal done
            async with limiter:
                try:
                    if request.session is not None:
                        raise BadRequest("a request within a session is sent with `complete`, not in a batch")
                    prepared = self.completions.prepare(request, "socket", caller)
                    with anyio.fail_after(prepared.timeout):
                        item = BatchItem(index=index, response=await self.completions.run(prepared))
                except Exception as exc:
                    item = BatchItem(index=index, error=error_info(exc))
                    if item.error is not None and item.error.code == ErrorCode.INTERNAL:
                        log.exception("batch item failed", index=index)
            done += 1
            ok = item.error is None
            if stream_results:
                results[index] = item if not ok else None
                await on_progress(BatchProgress(index=index, ok=ok, done=done, total=len(requests), item=item))
            else:
                results[index] = item
                await on_progress(BatchProgress(index=index, ok=ok, done=done, total=len(requests)))

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                tg.start_soon(run_one, index, request)
        return [r for r in results if r is not None]

    def hot_key(self, raw: msgspec.Raw, caller: Caller | None = None) -> str | None:
        """The cache key of a request seen before, from its bytes alone.

        Identical bytes under the same configuration (the daemon's, or one
        caller's project layer over it) validate, route and hash identically,
        so the key is reused; a config change clears the table.
        """
        hot = self._hot_keys if caller is None else caller.hot_keys
        if not hot:
            return None
        return hot.get(bytes(raw))

    def remember_key(self, raw: msgspec.Raw, prepared: Prepared) -> None:
        if prepared.key is None or prepared.mode not in ("use", "only") or prepared.optimized is not None:
            return  # only plain cache reads take the shortcut; an optimized request is reported each time
        hot = self._hot_keys if prepared.caller is None else prepared.caller.hot_keys
        if len(hot) >= HOT_KEYS:
            hot.clear()
        hot[bytes(raw)] = prepared.key


def cached_frames(rid: int, stream: bool, entry: MemEntry, optimized: Optimized | None = None) -> bytes:
    """A cache hit's reply: the stored response bytes spliced into `Done`,
    after its chunks when the request streams."""
    if optimized is None:
        done = encode_frame(_DoneRaw(id=rid, response=entry.raw))
    else:
        done = encode_frame(Done(id=rid, response=report(entry.response(), optimized)))
    if not stream:
        return done  # type: ignore[return-value]
    frames = [encode_frame(Chunk(id=rid, text=piece)) for piece in replay_chunks(entry)]
    frames.append(done)
    return b"".join(frames)


# A batch this long (up to 16 MiB of requests) leaves its memory freed but
# kept by the C allocator; it is handed back to the system when it ends.
_LARGE_BATCH = 1000


async def _give_memory_back(log: CompletionLog | None) -> None:
    """`malloc_trim(0)` in a worker thread, once the batch's objects are gone
    -- the request log's rows written first, so it holds none of them --
    (glibc only: elsewhere, nothing to do)."""
    await anyio.sleep(0.05)
    if log is not None:
        await log.flush()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    await anyio.to_thread.run_sync(trim, 0)
