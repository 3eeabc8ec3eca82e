"""What the HTTP providers share: the call through the pool, retries, streams
and the translation of every failure into the daemon's typed errors.

A subclass says how to talk to one API: the URL, headers, request body,
response parsing and a `StreamAssembler` that turns its server-sent events
into text deltas and a final response.

Retries follow `retry.RetryPolicy`. A streamed call is retried only while no
text has reached the client: after the first delta, a failure is the
client's to see (replaying would duplicate text). A stream that ends without
its terminal event is an error, never a short answer.

Each attempt takes the next usable key of the provider's `KeyRing` (a 429
rests that key, a 401/403 sets it aside and the next key is tried at once),
and asks its `Circuit` first: an open circuit fails the call at once, and an
attempt that got no answer (connection, 5xx, timeout) counts towards opening it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

import anyio
import httpx
import msgspec
import structlog
from httpx_sse import EventSource, ServerSentEvent, SSEError

from claif_client.protocol import CompletionRequest, CompletionResponse

from .. import structured
from ..answers import AnswerTooLarge, UpstreamResponse
from ..config import ProviderConfig, RetryConfig
from ..errors import (
    CircuitOpen,
    ClaifdError,
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
from .circuit import Circuit
from .keys import KeyRing

__all__ = ["HttpProvider", "StreamAssembler", "RetryableFailure"]

log = structlog.get_logger("claifd.upstream")


class RetryableFailure(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, error: ClaifdError, retry_after: float | None = None, now: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after
        # Try again at once (another key), without the policy's wait.
        self.now = now


class StreamAssembler:
    """Turns one API's server-sent events into deltas and a final response."""

    finished: bool = False

    def feed(self, event: ServerSentEvent) -> str | None:
        raise NotImplementedError

    def response(self) -> CompletionResponse:
        raise NotImplementedError


class HttpProvider:
    # The variable the built-in provider of this type reads its key from
    # (a named provider reads the one its `api_key_env` names).
    env_key: ClassVar[str] = ""
    # The public endpoint, when `base_url` is empty ("": the type needs one).
    default_base_url: ClassVar[str] = ""
    # The model that answers when this is the only provider with a key and client.model is not set.
    default_model: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        pool: HttpPool,
        counters: UpstreamCounters,
        config: ProviderConfig,
        retry: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        perf: Perf | None = None,
    ) -> None:
        self.name = name
        self.pool = pool
        self.counters = counters
        self.perf = perf if perf is not None else Perf(enabled=False)
        self.config = config
        self.retry = retry
        self.clock = clock
        self.limiter = anyio.CapacityLimiter(config.max_concurrency)
        self.keys = self._keys(config)
        self.circuit = self._circuit(config)
        # The model ids its GET models listed last (health probes refresh it): bare ids resolve by it.
        self.listed: list[str] = []

    def _keys(self, config: ProviderConfig) -> KeyRing:
        # Only a built-in name falls back to its SDK's variable (ANTHROPIC_API_KEY...).
        builtin = self.name == config.type and self.name in ("anthropic", "openai")
        return KeyRing(self.name, config, self.env_key if builtin else "", builtin, self.clock)

    def _circuit(self, config: ProviderConfig) -> Circuit:
        return Circuit(config.circuit_failures, float(config.circuit_cooldown), self.clock)

    def reconfigure(self, config: ProviderConfig) -> None:
        """Its `providers.NAME` section changed: new calls use it; the
        concurrency limit applies at once (calls over it wait); its keys and
        its circuit start afresh (a new key, a new base_url: try again)."""
        self.config = config
        self.limiter.total_tokens = config.max_concurrency
        self.keys = self._keys(config)
        self.circuit = self._circuit(config)

    def reconfigure_retry(self, retry: RetryConfig) -> None:
        self.retry = retry

    def __repr__(self) -> str:
        stats = self.limiter.statistics()
        return f"<{type(self).__name__} in_flight={stats.borrowed_tokens} queued={stats.tasks_waiting}>"

    def stats(self) -> dict[str, Any]:
        s = self.limiter.statistics()
        return {"type": self.config.type, "base_url": self.base_url(self.config), "in_flight": s.borrowed_tokens,
                "queued": s.tasks_waiting, "max_concurrency": int(s.total_tokens), "keys": self.keys.status(),
                "circuit": self.circuit.status(), "models": list(self.config.models)}

    def base_url(self, config: ProviderConfig) -> str:
        return (config.base_url or self.default_base_url).rstrip("/")

    def request_headers(self, config: ProviderConfig, key: str) -> dict[str, str]:
        """The type's headers, with the section's extra `headers` over them."""
        headers = self.headers(config, key)
        if config.headers:
            headers = {**headers, **{k.lower(): v for k, v in config.headers.items()}}
        return headers

    # ------------------------------------------------ what subclasses define

    def url(self, config: ProviderConfig, model: str) -> str:
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

    def api_key(self) -> str:
        """The next usable key (NotConfigured: none; RateLimited: all resting)."""
        return self.keys.pick()

    def configured(self) -> bool:
        """Whether this provider can be called: a key (config or environment), or none needed."""
        if not self.keys.required and not len(self.keys):
            return True
        return len(self.keys) > 0 and len(self.keys.refused()) < len(self.keys)

    async def _get_models(self) -> tuple[UpstreamResponse, str]:
        """`GET models` through the pool (no tokens spent): the response and the key used."""
        config = self.config
        key = self.api_key()
        lane = self.pool.acquire()
        try:
            resp = await lane.send("GET", self.models_url(config), self.request_headers(config, key))
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
            return "unhealthy", f"cannot reach {_host(self.models_url(self.config))}: {type(exc).__name__}"
        status = resp.status_code
        if status < 300:
            self._note_listed(resp.content)
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
        listed = self._note_listed(resp.content)
        if listed is None:
            raise UpstreamError(f"{self.name} sent a model list of the wrong shape")
        return listed

    def _note_listed(self, raw: bytes) -> list[str] | None:
        try:
            doc = msgspec.json.decode(raw, type=_ModelList)
        except msgspec.DecodeError:
            return None
        self.listed = [m.id for m in doc.data]
        return self.listed

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        return await self._call(request, model, None)

    async def stream(self, request: CompletionRequest, model: str, on_delta: DeltaCallback) -> CompletionResponse:
        return await self._call(request, model, on_delta)

    async def _call(self, request: CompletionRequest, model: str, on_delta: DeltaCallback | None) -> CompletionResponse:
        config = self.config
        url = self.url(config, model)
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
                try:
                    key = self._admit()
                    self.counters.requests += 1
                    response = await self._judged(url, config, key, content, model, forward if on_delta else None)
                except RetryableFailure as failure:
                    delay = None if delivered else policy.next_delay(attempt, self.clock() - started, failure.retry_after)
                    if failure.now and not delivered and attempt < retry.max_attempts:
                        delay = 0.0  # another key, at once
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
                    structured.check(request, response)  # (strict structured output: the schema holds)
                    return response
        finally:
            self.limiter.release()

    def _admit(self) -> str:
        """The key for the next attempt, if the circuit lets it go out.
        All keys resting is a wait the retry policy may take (RetryableFailure)."""
        if not self.circuit.allow():
            raise CircuitOpen(f"{self.name} failed {self.circuit.failures} times in a row; calls to it fail at "
                              f"once for {self.circuit.retry_in():.1f} s more (its circuit is open)",
                              retry_after=self.circuit.retry_in(), details={"provider": self.name})
        try:
            return self.keys.pick()
        except RateLimited as exc:
            self.circuit.released()
            raise RetryableFailure(exc, exc.retry_after) from exc
        except ClaifdError:
            self.circuit.released()
            raise

    async def _judged(self, url: str, config: ProviderConfig, key: str, content: bytes, model: str,
                      on_delta: DeltaCallback | None) -> CompletionResponse:
        """One attempt, and what it says of the key and of the provider."""
        try:
            response = await self._attempt(url, self.request_headers(config, key), content, model, on_delta, key)
        except RetryableFailure as failure:
            raise self._judge(failure.error, key) or failure
        except ClaifdError as error:
            again = self._judge(error, key)
            if again is not None:
                raise again from error
            raise
        except BaseException:
            self.circuit.released()
            raise
        self.circuit.succeeded()
        self.keys.worked(key)
        return response

    def _judge(self, error: ClaifdError, key: str) -> RetryableFailure | None:
        """A 429 rests the key, a 401/403 sets it aside: another key, if one is
        left, is tried at once (the RetryableFailure returned). An attempt
        with no answer counts on the circuit."""
        status = (error.details or {}).get("status")
        if status == 429:
            self.keys.rest(key, error.retry_after)
            self.circuit.released()
            if self.keys.usable():
                return RetryableFailure(error, error.retry_after, now=True)
        elif status in (401, 403):
            self.circuit.released()
            log.warning("API key refused", provider=self.name, status=status)
            if self.keys.refuse(key, status):
                return RetryableFailure(error, now=True)
        elif isinstance(error, TlsError) or (status is not None and status < 500) \
                or (error.details or {}).get("limit"):
            self.circuit.released()
        else:  # no answer: a connection refused or dropped, a 5xx, a timeout
            self.circuit.failed()
        return None

    async def _attempt(
        self, url: str, headers: dict[str, str], content: bytes, model: str,
        on_delta: DeltaCallback | None, key: str,
    ) -> CompletionResponse:
        lane = self.pool.acquire()
        status = "error"  # no HTTP status: the connection failed
        try:
            timeout = self.config.timeout
            if timeout is None:  # (no cancel scope on the common path: it costs ~20 us an attempt)
                resp = await lane.send("POST", url, headers, content)
            else:
                try:
                    with anyio.fail_after(float(timeout)):
                        resp = await lane.send("POST", url, headers, content)
                except TimeoutError as exc:
                    raise RetryableFailure(UpstreamTimeout(
                        f"{self.name} did not start answering within {float(timeout):g} s "
                        f"(providers.{self.name}.timeout)", details={"provider": self.name})) from exc
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
