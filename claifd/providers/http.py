"""What the HTTP providers share: the call through the pool, retries, streams
and the translation of every failure into the daemon's typed errors.

A subclass says how to talk to one API: the URL, headers, request body,
response parsing and a `StreamAssembler` that turns its server-sent events
into text deltas and a final response.

Retries follow `retry.RetryPolicy`. A streamed call is retried only while no
text has reached the client: after the first delta, a failure is the
client's to see (replaying would duplicate text). A stream that ends without
its terminal event is an error, never a short answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

import anyio
import httpx
import msgspec
import structlog
from httpx_sse import EventSource, ServerSentEvent, SSEError

from claif_client.protocol import CompletionRequest, CompletionResponse

from ..answers import AnswerTooLarge, UpstreamResponse
from ..config import ProviderConfig, RetryConfig
from ..errors import (
    ClaifdError,
    NotConfigured,
    RateLimited,
    TlsError,
    UpstreamError,
    UpstreamTimeout,
)
from ..perf import Perf
from ..pool import HttpPool, UpstreamTLSError
from ..redaction import redact_secrets
from ..retry import RetryPolicy, retry_after_seconds, should_retry_status
from ..types import DeltaCallback, UpstreamCounters

__all__ = ["HttpProvider", "StreamAssembler", "RetryableFailure"]

log = structlog.get_logger("claifd.upstream")


class RetryableFailure(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, error: ClaifdError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class StreamAssembler:
    """Turns one API's server-sent events into deltas and a final response."""

    finished: bool = False

    def feed(self, event: ServerSentEvent) -> str | None:
        raise NotImplementedError

    def response(self) -> CompletionResponse:
        raise NotImplementedError


class HttpProvider:
    name: ClassVar[str]
    env_key: ClassVar[str]

    def __init__(
        self,
        pool: HttpPool,
        counters: UpstreamCounters,
        config: ProviderConfig,
        retry: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        perf: Perf | None = None,
    ) -> None:
        self.pool = pool
        self.counters = counters
        self.perf = perf if perf is not None else Perf(enabled=False)
        self.config = config
        self.retry = retry
        self.clock = clock
        self.limiter = anyio.CapacityLimiter(config.max_concurrency)

    def reconfigure(self, config: ProviderConfig) -> None:
        """Its `providers.NAME` section changed: new calls use it; the
        concurrency limit applies at once (calls over it wait)."""
        self.config = config
        self.limiter.total_tokens = config.max_concurrency

    def reconfigure_retry(self, retry: RetryConfig) -> None:
        self.retry = retry

    def __repr__(self) -> str:
        stats = self.limiter.statistics()
        return f"<{type(self).__name__} in_flight={stats.borrowed_tokens} queued={stats.tasks_waiting}>"

    def stats(self) -> dict[str, int]:
        s = self.limiter.statistics()
        return {"in_flight": s.borrowed_tokens, "queued": s.tasks_waiting, "max_concurrency": int(s.total_tokens)}

    # ------------------------------------------------ what subclasses define

    def url(self, config: ProviderConfig) -> str:
        raise NotImplementedError

    def models_url(self, config: ProviderConfig) -> str:
        """Where the provider lists its models: the health check's probe (it costs no tokens)."""
        raise NotImplementedError

    def headers(self, config: ProviderConfig, key: str) -> dict[str, str]:
        raise NotImplementedError

    def body(self, request: CompletionRequest, model: str, stream: bool, config: ProviderConfig) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, doc: Any, model: str) -> CompletionResponse:
        raise NotImplementedError

    def assembler(self, model: str) -> StreamAssembler:
        raise NotImplementedError

    def error_message(self, doc: Any) -> str | None:
        raise NotImplementedError

    # ------------------------------------------------------------- calling

    def api_key(self, config: ProviderConfig) -> str:
        key = config.api_key or os.environ.get(self.env_key)
        if not key:
            raise NotConfigured(
                f"no API key for {self.name}: the daemon reads providers.{self.name}.api_key from its config "
                f"(`claif keys set {self.name}`) or {self.env_key} from its own environment (the systemd service: "
                f"~/.config/claif/env); a key exported in your shell does not reach a daemon already running"
            )
        return key

    def configured(self) -> bool:
        """Whether this provider has a key (config or environment) to be used with."""
        try:
            self.api_key(self.config)
        except ClaifdError:
            return False
        return True

    async def _get_models(self) -> tuple[UpstreamResponse, str]:
        """`GET models` through the pool (no tokens spent): the response and the key used."""
        config = self.config
        key = self.api_key(config)
        lane = self.pool.acquire()
        try:
            resp = await lane.send("GET", self.models_url(config), self.headers(config, key))
            try:
                await resp.aread()
            finally:
                await resp.aclose()
            return resp, key
        finally:
            self.pool.release(lane)

    async def probe(self) -> tuple[str, str]:
        """The health check: ("ok" | "warning" | "unhealthy", detail). The caller times it."""
        try:
            resp, _ = await self._get_models()
        except UpstreamTLSError as exc:
            return "unhealthy", f"tls_error: {exc}"
        except httpx.HTTPError as exc:
            return "unhealthy", f"cannot reach {_host(self.url(self.config))}: {type(exc).__name__}"
        status = resp.status_code
        if status in (401, 403):
            return "unhealthy", f"the API key was refused ({status})"
        if status >= 500:
            return "unhealthy", f"GET models answered {status}"
        return ("warning" if status >= 400 else "ok"), f"GET models answered {status}"

    async def list_models(self) -> list[str]:
        """The provider's model ids; UpstreamError if it cannot say."""
        try:
            resp, key = await self._get_models()
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot list {self.name}'s models: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            failure = self._status_failure(resp, resp.content, key)
            raise failure.error if isinstance(failure, RetryableFailure) else failure
        try:
            doc = msgspec.json.decode(resp.content, type=_ModelList)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} sent a model list of the wrong shape ({exc})") from exc
        return [m.id for m in doc.data]

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        return await self._call(request, model, None)

    async def stream(self, request: CompletionRequest, model: str, on_delta: DeltaCallback) -> CompletionResponse:
        return await self._call(request, model, on_delta)

    async def _call(self, request: CompletionRequest, model: str, on_delta: DeltaCallback | None) -> CompletionResponse:
        config = self.config
        key = self.api_key(config)
        url = self.url(config)
        headers = self.headers(config, key)
        content = msgspec.json.encode(self.body(request, model, on_delta is not None, config))
        retry = self.retry
        policy = RetryPolicy(retry.max_attempts, float(retry.base_delay), float(retry.max_delay), float(retry.deadline))
        delivered = False

        async def forward(text: str) -> None:
            nonlocal delivered
            delivered = True
            assert on_delta is not None
            await on_delta(text)

        started = self.clock()
        attempt = 0
        perf = self.perf
        # Fast path: a free slot needs no trip through the event loop.
        try:
            self.limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self.limiter.acquire()
        timer = time.perf_counter()  # the call's duration, not its wait for a slot
        try:
            while True:
                attempt += 1
                self.counters.requests += 1
                try:
                    response = await self._attempt(url, headers, content, model, forward if on_delta else None, key)
                except RetryableFailure as failure:
                    delay = None if delivered else policy.next_delay(attempt, self.clock() - started, failure.retry_after)
                    if delay is None:
                        self.counters.errors += 1
                        perf.upstream_call(self.name, model, time.perf_counter() - timer, False)
                        raise failure.error from failure
                    self.counters.retries += 1
                    perf.retry(self.name)
                    log.info(
                        "retrying upstream call", provider=self.name, attempt=attempt,
                        reason=failure.error.message, delay_s=round(delay, 3),
                    )
                    await anyio.sleep(delay)
                except ClaifdError:
                    self.counters.errors += 1
                    perf.upstream_call(self.name, model, time.perf_counter() - timer, False)
                    raise
                else:
                    usage = response.usage
                    perf.upstream_call(self.name, model, time.perf_counter() - timer, True,
                                       usage.input_tokens, usage.output_tokens)
                    return response
        finally:
            self.limiter.release()

    async def _attempt(
        self, url: str, headers: dict[str, str], content: bytes, model: str,
        on_delta: DeltaCallback | None, key: str,
    ) -> CompletionResponse:
        lane = self.pool.acquire()
        status = "error"  # no HTTP status: the connection failed
        try:
            resp = await lane.send("POST", url, headers, content)
            try:
                status = str(resp.status_code)
                if resp.status_code >= 400:
                    raise self._status_failure(resp, await resp.aread(), key)
                if on_delta is None:
                    raw = await resp.aread()
                    content_type = resp.headers.get("content-type", "")
                    if "json" not in content_type.lower():
                        raise UpstreamError(f"{self.name} answered {resp.status_code} with content-type "
                                            f"{content_type[:80]!r}, not JSON")
                    return self._checked(self.parse(self._decode(raw), model))
                return self._checked(await self._consume(resp, model, on_delta))
            finally:
                await resp.aclose()
        except UpstreamTLSError as exc:
            log.warning("TLS failure", provider=self.name, error=str(exc))
            raise TlsError(f"{self.name}: {exc} (pool.ca_file adds a CA)") from exc
        except AnswerTooLarge as exc:
            log.warning("upstream answer over a limit", provider=self.name, error=str(exc))
            raise UpstreamError(f"{self.name}: {exc}; the connection was closed",
                                details={"provider": self.name, "limit": True}) from exc
        except httpx.ConnectError as exc:
            raise RetryableFailure(UpstreamError(f"cannot connect to {self.name} ({_host(url)})")) from exc
        except httpx.ConnectTimeout as exc:
            raise RetryableFailure(UpstreamTimeout(f"connecting to {self.name} ({_host(url)}) timed out")) from exc
        except httpx.PoolTimeout as exc:
            raise UpstreamTimeout("no free connection in the daemon's pool in time (pool.pool_timeout)") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{self.name} did not answer in time ({type(exc).__name__})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The server dropped the connection (often a kept-alive one it had
            # just closed): safe to retry as long as the client saw nothing.
            raise RetryableFailure(UpstreamError(f"{self.name} closed the connection: {exc}")) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"request to {self.name} failed: {type(exc).__name__}") from exc
        finally:
            self.perf.attempt(self.name, status)
            self.pool.release(lane)

    async def _consume(self, resp: UpstreamResponse, model: str, on_delta: DeltaCallback) -> CompletionResponse:
        assembler = self.assembler(model)
        try:
            # EventSource reads only `headers` and `aiter_text()`, which the
            # lane's response has.
            async for event in EventSource(cast(httpx.Response, resp)).aiter_sse():
                text = assembler.feed(event)
                if text:
                    await on_delta(text)
                if assembler.finished:
                    break
        except SSEError as exc:
            raise UpstreamError(f"{self.name} sent a malformed stream: {exc}") from exc
        if not assembler.finished:
            raise RetryableFailure(UpstreamError(f"{self.name} ended the stream before it was complete"))
        return assembler.response()

    def _checked(self, response: CompletionResponse) -> CompletionResponse:
        """The response, if every field has its schema's type and range.

        What a provider's JSON put into the response is checked once more
        against `CompletionResponse` (msgspec), so an answer with a usage of
        "lots" or content that is a string never reaches a client or the
        cache (where every later hit would fail to decode)."""
        try:
            return msgspec.convert(msgspec.to_builtins(response), CompletionResponse)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise UpstreamError(f"{self.name} sent an answer of the wrong shape ({exc})") from exc

    def _decode(self, raw: bytes) -> Any:
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} sent a response that is not JSON") from exc

    def _status_failure(self, resp: UpstreamResponse, raw: bytes, key: str) -> Exception:
        status = resp.status_code
        try:
            detail = self.error_message(msgspec.json.decode(raw[:_MAX_ERROR_BODY]))
        except (msgspec.DecodeError, ValueError, RecursionError):
            detail = None
        detail = detail if isinstance(detail, str) else raw[:_MAX_ERROR_BODY].decode(errors="replace")
        # Redact the whole text, then cut: a key split by the cut, or echoed
        # partly masked, is caught as well as a whole one.
        detail = redact_secrets(detail, [key])[:_MAX_DETAIL] or resp.reason_phrase
        message = f"{self.name} answered {status}: {detail}"
        retry_after = retry_after_seconds(resp.headers)
        details: dict[str, Any] = {"status": status, "provider": self.name}
        error: ClaifdError
        if status == 429:
            error = RateLimited(message, retry_after=retry_after, details=details)
        elif status in (408, 504):
            error = UpstreamTimeout(message, details=details)
        else:
            error = UpstreamError(message, details=details)
        if should_retry_status(status, resp.headers):
            return RetryableFailure(error, retry_after)
        return error


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    """Both APIs answer GET models with {"data": [{"id": ...}, ...], ...}."""

    data: list[_Model]


# How much of an error body is read for its message, and shown of it.
_MAX_ERROR_BODY = 64 * 1024
_MAX_DETAIL = 300


def _host(url: str) -> str:
    return httpx.URL(url).host or str(url)
