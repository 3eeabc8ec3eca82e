"""The completion pipeline: every front (the Unix-socket server's complete
and batch, sessions, the HTTP front's two wires) runs a completion through
this one object.

    request -> prepare (validate, route, optimize, cache key, deadline: decided once)
            -> try_hit               the memory tier, synchronously (the fast
                                     path: no task, no await; recorded)
            -> run(prepared, sink)   everything else, recorded whichever front
                                     asked (metrics, first token, request log):
               -> disk tier          (the memory tier is not probed again)
               -> semantic cache     (opt-in; a peer of the exact cache:
                                     semantic/service.py)
               -> single-flight join (the cache hands back a flight; the
                                     leader's call is flown here, not by the cache)
               -> upstream provider  (retries, limits: providers/)
               -> store              (memory now, disk write-behind; indexed
                                     by meaning when the request wanted it)
               -> the sink           (its text as it arrives when it streams,
                                     then the answer, before it is recorded)

A sink is where the answer goes: socket frames (completion_requests.py),
OpenAI or Anthropic JSON and server-sent events (http/sinks.py); None
collects (batch items, sessions). A session send is the same path with the
session's context as the request (`SessionService.send` builds it and saves
the new messages once the reply is in). The draining check is made at the
door and in `prepare` for requests that reach upstream later (batch items,
queued session sends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec
import structlog

from claif_client.protocol import (
    CompletionRequest,
    CompletionResponse,
)

from . import fallbacks
from .auto import AUTO, choose_model
from .cache import ResponseCache, cache_key, split_for_replay
from .cache.entry import MemEntry
from .cache.flight import Flight
from .cache.replay import replay_chunks
from .callers import Caller
from .config import Config
from .config_manager import ConfigManager
from .errors import BadRequest, BudgetExceeded, ClaifdError, NotFound, ShuttingDown, UpstreamTimeout, error_info
from .optimizer import Optimized, optimize
from .perf import Perf
from .prepared import CACHE_MODES, Prepared, _validate
from .prompt_cache import PromptCache
from .providers import Providers
from .request_log import CompletionLog
from .semantic.service import SemanticCache
from .sessions.service import SessionService
from .spend import Limit, Spend
from .types import DeltaCallback, ServerState

__all__ = ["Completions", "Prepared", "Sink", "CACHE_MODES", "report"]

log = structlog.get_logger("claifd.completions")

# Distinct recent requests whose cache keys the hot path remembers.
HOT_KEYS = 4096


class Sink(Protocol):
    """Where an answer goes: its text as it arrives (`delta`, when
    `streaming`), then the answer (`done`)."""

    streaming: bool

    async def delta(self, text: str) -> None: ...

    async def done(self, response: CompletionResponse) -> None: ...


class Completions:
    def __init__(self, settings: ConfigManager, providers: Providers, cache: ResponseCache,
                 semantic: SemanticCache, sessions: SessionService, state: ServerState,
                 perf: Perf | None = None) -> None:
        self.config = settings.config
        self.settings = settings
        self.perf = perf if perf is not None else Perf(enabled=False)
        # Where every completion is logged (claif log); the app sets it.
        self.request_log: CompletionLog | None = None
        self.providers = providers
        self.cache = cache
        self.semantic = semantic
        self.sessions = sessions
        self.state = state
        # How often `model: "auto"` chose each model.
        self.auto_selected: dict[str, int] = {}
        # What calls cost, and the budgets (the app sets it); prompt-cache breakpoints placed for callers.
        self.spend: Spend | None = None
        self.prompt_cache = PromptCache()

    def __repr__(self) -> str:
        return f"<Completions flights={len(self.cache.flights)}>"

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def provider_type(self, name: str) -> str:
        """The API type of the provider a model name routes to ("echo"; "" if it routes nowhere)."""
        if name == AUTO:
            return ""
        try:
            provider_name, _ = self.providers.resolve(name, self.config.client.model, self.config.models)
        except ClaifdError:
            return ""
        provider = self.providers.get(provider_name)
        config = getattr(provider, "config", None)
        return str(config.type) if config is not None else provider_name if provider is not None else ""

    # ------------------------------------------------------------ decisions

    def prepare(self, request: CompletionRequest, front: str = "socket", caller: Caller | None = None) -> Prepared:
        """Validate and route a request, compute its cache key and deadline
        (no I/O); `caller`: the project layer of the caller (None: the daemon's
        configuration).

        Raises the request's `ClaifdError` (bad_request, shutting_down...).
        """
        if self.state.draining:
            raise ShuttingDown("the daemon is shutting down")
        _validate(request)
        config = self.config if caller is None else caller.config
        optimized: Optimized = {}
        name = request.model or config.client.model
        if request.model is None and \
                not self.settings.is_set("client.model", caller.layer if caller is not None else None) and \
                (keyed := self.providers.only_keyed()) is not None:
            # client.model not set, one provider with a key: that one answers (and the reply says why).
            name = keyed
            optimized["model"] = {"chosen": keyed, "rule": "the only provider with an API key (client.model is "
                                                           "not set)"}
        if name == AUTO:
            name, rule = choose_model(request, config.auto)
            optimized["model"] = {"chosen": name, "rule": rule}
            self.auto_selected[name] = self.auto_selected.get(name, 0) + 1
        provider_name, model = self.providers.resolve(name, config.client.model, config.models)
        provider = self.providers.get(provider_name)
        if provider is None:
            raise BadRequest(
                f"unknown provider {provider_name!r} (available: {', '.join(sorted(self.providers))})"
            )
        control = request.cache
        namespace = (control.namespace if control is not None else None) or config.cache.namespace
        over_budget = None
        spend = self.spend
        if spend is not None and spend.limits and (over := spend.over(provider_name, model, namespace)) is not None:
            over_budget = _budget_reached(*over)
            if config.budgets.action == "downgrade":
                # The fast tier serves it instead (reported), at the fast tier's price.
                fast = self.providers.resolve(config.auto.fast, config.client.model, config.models)
                if fast != (provider_name, model):
                    provider = self.providers.get(fast[0])
                    if provider is None:
                        raise BadRequest(f"budgets.action is downgrade, but auto.fast {config.auto.fast!r} routes "
                                         f"to no provider")
                    optimized["budget"] = {"from": f"{provider_name}/{model}", "to": f"{fast[0]}/{fast[1]}",
                                           "rule": over_budget}
                    provider_name, model = fast
                over_budget = None
        request = optimize(request, provider_name, model, config, optimized)
        mode = control.mode if control is not None else "use"
        if mode not in CACHE_MODES:
            raise BadRequest(f"cache mode {mode!r} is not one of {', '.join(sorted(CACHE_MODES))}")
        key = None
        if config.cache.enabled and mode != "bypass":
            key = cache_key(provider_name, model, request, namespace)
        elif mode == "only":
            raise NotFound("cache mode 'only' but the cache is disabled")
        timeout = request.timeout if request.timeout is not None else float(config.client.timeout)
        return Prepared(request, provider, model, key, namespace, mode, timeout, optimized or None, front, caller,
                        over_budget)

    def reprepare(self, request: CompletionRequest, like: Prepared) -> Prepared:
        """`request` (a fallback's) decided as `like` was: same front, same caller."""
        return self.prepare(request, like.front, like.caller)

    def config_of(self, prepared: Prepared) -> Config:
        return self.config if prepared.caller is None else prepared.caller.config

    def request_timeout(self, request: CompletionRequest, caller: Caller | None = None) -> float:
        config = self.config if caller is None else caller.config
        return request.timeout if request.timeout is not None else float(config.client.timeout)

    # ------------------------------------------- the pipeline, for every front

    def try_hit(self, prepared: Prepared, started: float) -> MemEntry | None:
        """The synchronous fast path: a memory-tier hit for `prepared`,
        recorded (metrics, request log), or None. No I/O, no await."""
        if prepared.key is None or prepared.mode == "refresh":
            return None
        entry = self.cache.lookup_memory(prepared.key)
        if entry is not None:
            self.record_hit(entry, started, prepared.front, prepared.request)
        return entry

    def record_hit(self, entry: MemEntry, started: float, front: str = "socket", request: Any = None) -> None:
        """A memory-tier hit, recorded. `request`: the request, or (its raw
        bytes, their wire) from a hot path that never decoded it."""
        provider, model = self.perf.labels(entry.model)
        self._record(front, provider, model, "cached-exact", time.perf_counter() - started, entry.input_tokens,
                     entry.output_tokens, entry.namespace, request, entry)

    def refused(self, code: str, started: float, front: str = "socket") -> None:
        """A completion request refused before it ran (invalid, unroutable, draining)."""
        self._record(front, "", "", code, time.perf_counter() - started, 0, 0)

    async def run(self, prepared: Prepared, sink: Sink | None = None, memory_probed: bool = False) -> CompletionResponse:
        """Everything but a memory-tier hit, for every front, into `sink`
        (None: the answer is only returned). The sink has the answer before
        it is recorded (the metrics and the request log, here whichever
        front asked), so recording adds no latency."""
        response = None
        outcome = "ok"
        try:
            on_delta = self._first_token(prepared, sink.delta) if sink is not None and sink.streaming else None
            response = await self._answer(prepared, on_delta, memory_probed)
            if prepared.optimized is not None:
                response = report(response, prepared.optimized)
            if sink is not None:
                await sink.done(response)
            return response
        except BaseException as exc:
            outcome = _outcome(exc, prepared.started, prepared.timeout)
            raise
        finally:
            usage = response.usage if response is not None else None
            self._record(prepared.front, prepared.provider.name, prepared.model,
                         prepared.outcome if outcome == "ok" else outcome,
                         time.perf_counter() - prepared.started, usage.input_tokens if usage else 0,
                         usage.output_tokens if usage else 0, prepared.namespace, prepared.request, response)

    def _record(self, front: str, provider: str, model: str, outcome: str, seconds: float, tokens_in: int,
                tokens_out: int, namespace: str | None = None, request: Any = None, answer: Any = None) -> None:
        """The metrics (when on) and the request log (claif log)."""
        perf = self.perf
        perf.request("complete", provider, model, outcome, seconds, front)
        if outcome.startswith("cached-") and self.spend is not None:
            self.spend.hit(provider, model, namespace or "", tokens_in, tokens_out)
        log = self.request_log
        if log is not None:
            cost = 0.0
            if outcome == "ok":
                usage = answer.usage if isinstance(answer, CompletionResponse) else None
                cost = perf.prices.cost(f"{provider}/{model}", tokens_in, tokens_out,
                                        usage.cache_creation_input_tokens if usage else 0,
                                        usage.cache_read_input_tokens if usage else 0)
            log.add((time.time(), front, "complete", namespace, provider, model, outcome, seconds, tokens_in,
                     tokens_out, cost, request, answer))

    def _first_token(self, prepared: Prepared, on_delta: DeltaCallback) -> DeltaCallback:
        """`on_delta`, timing the first piece of text (time to first token)."""
        first = True

        async def timed(text: str) -> None:
            nonlocal first
            if first:
                first = False
                self.perf.first_token(prepared.provider.name, prepared.model, time.perf_counter() - prepared.started)
            await on_delta(text)

        return timed

    async def _answer(self, prepared: Prepared, on_delta: DeltaCallback | None,
                      memory_probed: bool) -> CompletionResponse:
        """The cache tiers, then the flight that shares one upstream call."""
        if prepared.key is None:
            streamed = fallbacks.Streamed(on_delta)
            response, _, note = await self._paid_call(prepared, streamed.forward if on_delta else None, streamed)
            return response if note is None else msgspec.structs.replace(response, fallback=note)
        if prepared.mode != "refresh":
            entry = await self.cache.lookup(prepared.key, memory_probed, prepared.namespace)
            if entry is not None:
                prepared.outcome = "cached-exact"
                if on_delta is not None:
                    for piece in replay_chunks(entry):
                        await on_delta(piece)
                return entry.response()
            similar = await self._semantic_hit(prepared)
            if similar is not None:
                if on_delta is not None:
                    for piece in split_for_replay(similar.text):
                        await on_delta(piece)
                return similar
            if prepared.mode == "only":
                raise NotFound("no cached answer for this request (cache mode 'only')")
        flight = self._board(prepared, streaming=on_delta is not None)
        async with flight.subscription():
            return await flight.answer(on_delta)

    async def _semantic_hit(self, prepared: Prepared) -> CompletionResponse | None:
        """An earlier answer to a prompt asking the same (semantic tier), or None."""
        if not self.semantic.wanted(prepared.request, prepared.namespace):
            return None
        response = await self.semantic.find(prepared.provider.name, prepared.model, prepared.request,
                                            prepared.namespace)
        if response is not None:
            prepared.outcome = "cached-semantic"
        return response

    def _board(self, prepared: Prepared, streaming: bool) -> Flight:
        """Join the flight for the request's key; a new one is flown from here."""
        assert prepared.key is not None
        flight, leader = self.cache.flights.join(prepared.key, streaming)
        if leader:  # a task of its own: the call outlives the request that started it
            self.state.tasks.spawn(self._fly(prepared, flight))
        else:
            prepared.outcome = "coalesced"
        return flight

    async def _fly(self, prepared: Prepared, flight: Flight) -> None:
        """The shared upstream call: owned by no request, cancelled when the
        last subscriber leaves (`Flight.subscription`)."""
        assert prepared.key is not None
        response: CompletionResponse | None = None
        error: BaseException | None = None
        shared = self.cache.shared
        remote: MemEntry | None = None
        made_by, note = prepared, None  # the request whose answer it is (a fallback's: cached under its key)
        scope = flight.scope
        scope.deadline = anyio.current_time() + prepared.timeout
        try:
            with scope:
                if shared:  # another daemon may be making this very call
                    remote = await self.cache.claim(prepared.key, prepared.namespace,
                                                    time.monotonic() + prepared.timeout)
                if remote is not None:
                    prepared.outcome = "coalesced"
                    if flight.streaming:
                        for piece in replay_chunks(remote):
                            await flight.record(piece)
                    response = remote.response()
                else:
                    response, made_by, note = await self._call_upstream(prepared, flight, shared)
                    response = msgspec.structs.replace(response, cache_key=made_by.key)
            if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
                error = UpstreamTimeout("request timed out in the daemon")
        except Exception as exc:
            error = exc
        finally:
            self.cache.flights.land(flight)
        try:
            if response is not None and remote is None and made_by.key is not None:
                stored = self.cache.store(made_by.key, made_by.namespace, made_by.request, response,
                                          flight.chunks if flight.streaming else None)
                if stored is not None and self.cache.shared:
                    await self.cache.share(stored)  # in Redis before any daemon's reply goes out
                if stored is not None and self.semantic.wanted(made_by.request, made_by.namespace):
                    await self.semantic.index(made_by.provider.name, made_by.model, made_by.request,
                                              made_by.namespace, made_by.key)
            if response is not None and note is not None:
                response = msgspec.structs.replace(response, fallback=note)  # said to the callers, never stored
        finally:
            if shared and remote is None:
                with anyio.CancelScope(shield=True):
                    await self.cache.tier.release(prepared.key)  # after the answer is in Redis, or on failure
            flight.finish(response, error)

    async def _call_upstream(self, prepared: Prepared, flight: Flight, shared: bool) -> _Made:
        """The provider call (streamed into the flight); with a shared backend
        its cross-daemon lease is renewed while it runs."""
        if not shared:
            return await self._provider_call(prepared, flight)
        assert prepared.key is not None
        async with anyio.create_task_group() as lease:
            lease.start_soon(self.cache.tier.renew, prepared.key)
            response = await self._provider_call(prepared, flight)
            lease.cancel_scope.cancel()
        return response

    async def _provider_call(self, prepared: Prepared, flight: Flight) -> _Made:
        """The provider's call, or its fallbacks' (never once a streamed byte went out)."""
        return await self._paid_call(prepared, flight.record if flight.streaming else None, lambda: bool(flight.chunks))

    async def _paid_call(self, prepared: Prepared, on_delta: DeltaCallback | None,
                         streamed: Callable[[], bool]) -> _Made:
        """Every upstream call: refused when a budget is reached; its cost in
        the spend ledger before anyone has the answer."""
        if prepared.over_budget is not None:
            raise BudgetExceeded(prepared.over_budget)
        made = await fallbacks.call(prepared, on_delta, streamed, self.config_of(prepared), self.reprepare,
                                    self.perf, self._send)
        if self.spend is not None:
            response, by, _ = made
            self.spend.paid(by.provider.name, by.model, by.namespace, response.usage)
        return made

    async def _send(self, prepared: Prepared, on_delta: DeltaCallback | None) -> CompletionResponse:
        """One provider call, with prompt-cache breakpoints placed for the caller (prompt_cache.py)."""
        request = prepared.request
        rules = self.config_of(prepared).optimizer
        if rules.prompt_cache and rules.enabled and _explicit_prompt_cache(prepared.provider):
            request, placed = self.prompt_cache.place(request, prepared.model)
            if placed is not None:
                prepared.optimized = {**(prepared.optimized or {}), "prompt_cache": placed}
        if on_delta is None:
            return await prepared.provider.complete(request, prepared.model)
        return await prepared.provider.stream(request, prepared.model, on_delta)

    async def session_send(
        self, request: CompletionRequest, on_delta: DeltaCallback | None, front: str = "socket",
        caller: Caller | None = None,
    ) -> tuple[CompletionResponse, dict[str, Any]]:
        """`complete` within a session: its context goes upstream, the new
        message and the reply are saved before the reply is returned. The
        upstream part is `run` (recorded there); a refusal before it is
        recorded here."""
        assert request.session is not None
        started = time.perf_counter()
        ran = False

        async def complete(upstream: CompletionRequest, deltas: DeltaCallback | None) -> CompletionResponse:
            nonlocal ran
            prepared = self.prepare(upstream, front, caller)
            ran = True
            return await self.run(prepared, _Deltas(deltas) if deltas is not None else None)

        try:
            _validate(request)
            context = self.config.session.context
            return await self.sessions.send(
                request.session, request, complete, on_delta, context.max_tokens, context.recent
            )
        except BaseException as exc:
            if not ran:
                self.refused(_outcome(exc, started, self.request_timeout(request, caller)), started, front)
            raise


class _Deltas:
    """A sink of text pieces only (a session's stream: the session service
    has the answer itself)."""

    __slots__ = ("_on_delta",)
    streaming = True

    def __init__(self, on_delta: DeltaCallback) -> None:
        self._on_delta = on_delta

    async def delta(self, text: str) -> None:
        await self._on_delta(text)

    async def done(self, response: CompletionResponse) -> None:
        pass


# An upstream answer, the request that made it, and the fallback note.
_Made = tuple[CompletionResponse, Prepared, "dict[str, str] | None"]


# A cancellation this close to the deadline is the deadline's (uvloop's clock ticks in whole ms).
_DEADLINE_SLACK = 0.01


def _outcome(exc: BaseException, started: float, timeout: float) -> str:
    """A failed completion's outcome for the metrics: its error code, or
    timeout / cancelled for a cancellation (a deadline, a Cancel, a client gone)."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "timeout" if time.perf_counter() - started >= timeout - _DEADLINE_SLACK else "cancelled"
    return error_info(exc).code


def report(response: CompletionResponse, optimized: Optimized) -> CompletionResponse:
    """The reply with what the optimizer changed in its request (never stored:
    another request may reach the same answer with other changes)."""
    return msgspec.structs.replace(response, optimized=optimized)




def _explicit_prompt_cache(provider: Any) -> bool:
    """Does the provider cache prompts only where asked (Anthropic's API)?"""
    config = getattr(provider, "config", None)
    return config is not None and config.type == "anthropic"


def _budget_reached(limit: Limit, spent: float) -> str:
    when = "today" if limit.period == "day" else "this month"
    return (f"{limit.key} reached: {spent:.2f} of {limit.usd:.2f} USD spent {when} "
            f"(see claif spend; raise the limit or wait for the {limit.period} to end)")
