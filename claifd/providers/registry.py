"""The provider types, the providers a configuration names, and how a model
name finds its provider.

A provider type is one entry of `TYPES`:

    name        what `providers.NAME.type` says ("anthropic", "openai", "azure")
    cls         the HttpProvider subclass that speaks its API (its module:
                the URL, headers and body it sends, the answer and stream it reads)
    prefixes    bare model ids of the public API it owns ("claude-..." ->
                the provider named like the type)

To add one: its module in providers/ and one line here. A provider is a
section `providers.NAME` of the configuration with its `type`; `anthropic`
and `openai` are built in, any other name is the user's (claifd/config/schema.py).
`Providers` builds one per section (and the offline `echo`), rebuilds them
when the sections change, and resolves model names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterator, Mapping
from typing import NamedTuple

import structlog

from ..config import Config, ProviderConfig, RetryConfig
from ..errors import BadRequest
from ..perf import Perf
from ..pool import HttpPool
from ..types import UpstreamCounters
from .anthropic import AnthropicProvider
from .azure import AzureProvider
from .base import Provider
from .echo import EchoProvider
from .http import HttpProvider
from .openai import OpenAIProvider

__all__ = ["TYPES", "ProviderType", "Providers", "check", "provider_of", "resolve_model"]

log = structlog.get_logger("claifd.providers")


class ProviderType(NamedTuple):
    name: str
    cls: type[HttpProvider]
    prefixes: tuple[str, ...]


TYPES = (
    ProviderType("anthropic", AnthropicProvider, ("claude-",)),
    ProviderType("openai", OpenAIProvider, ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-")),
    ProviderType("azure", AzureProvider, ()),
)
_BY_NAME = {kind.name: kind for kind in TYPES}


def check(config: Config) -> list[str]:
    """What is wrong with the `providers` sections (the loader refuses the configuration)."""
    problems = []
    for name, section in config.providers.items():
        kind = _BY_NAME.get(section.type)
        if name == "echo" or "/" in name or not name:
            problems.append(f"providers.{name}: {name!r} cannot name a provider")
        elif kind is None:
            problems.append(f"providers.{name}.type must be one of {', '.join(_BY_NAME)}, got {section.type!r}")
        elif not section.base_url and not kind.cls.default_base_url:
            problems.append(f"providers.{name}.base_url is required for a provider of type {section.type}")
    for source, targets in config.routing.fallbacks.items():
        if not targets:
            problems.append(f"routing.fallbacks.{source} lists no model")
    return problems


def provider_of(model: str) -> str | None:
    """The built-in provider of a bare public model id ("claude-3-5-haiku-20241022" -> "anthropic"), or None."""
    for kind in TYPES:
        for prefix in kind.prefixes:
            if model.startswith(prefix) and (len(prefix) > 2 or len(model) == 2 or model[2] in "-."):
                return kind.name
    return None


class Providers(Mapping[str, Provider]):
    """Every provider by name: `echo` and one per `providers.NAME` section.
    Its sections change live: a new one is built, a removed one goes (calls
    in flight on it finish), a changed type rebuilds it, any other change
    reconfigures it (its keys and circuit start afresh)."""

    def __init__(self, pool: HttpPool, counters: UpstreamCounters, config: Config,
                 clock: Callable[[], float] = time.monotonic, perf: Perf | None = None) -> None:
        self.pool = pool
        self.counters = counters
        self.clock = clock
        self.perf = perf
        self.retry = config.retry
        self._all: dict[str, Provider] = {"echo": EchoProvider(counters)}
        self.http: dict[str, HttpProvider] = {}
        self.reconfigure(config.providers)

    def __getitem__(self, name: str) -> Provider:
        return self._all[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"<Providers {sorted(self._all)}>"

    def _build(self, name: str, section: ProviderConfig) -> HttpProvider:
        cls = _BY_NAME[section.type].cls
        return cls(name, self.pool, self.counters, section, self.retry, clock=self.clock, perf=self.perf)

    def reconfigure(self, sections: Mapping[str, ProviderConfig]) -> None:
        for name in [n for n in self.http if n not in sections]:
            del self.http[name], self._all[name]
            log.info("provider removed", provider=name)
        for name, section in sections.items():
            current = self.http.get(name)
            if current is not None and current.config == section:
                continue
            if current is not None and type(current) is _BY_NAME[section.type].cls:
                current.reconfigure(section)
                continue
            self.http[name] = self._all[name] = self._build(name, section)
            if current is not None or name not in ("anthropic", "openai"):
                log.info("provider configured", provider=name, type=section.type)

    def reconfigure_retry(self, retry: RetryConfig) -> None:
        self.retry = retry
        for provider in self.http.values():
            provider.reconfigure_retry(retry)

    def only_keyed(self) -> str | None:
        """"provider/model" of the one provider that has an API key, when only
        one has: its first configured model, else its type's default (None
        when several or none have a key, or it has no default)."""
        keyed = [(name, p) for name, p in self.http.items() if len(p.keys) > 0]
        if len(keyed) != 1:
            return None
        name, provider = keyed[0]
        model = provider.config.models[0] if provider.config.models else provider.default_model
        return f"{name}/{model}" if model else None

    def of_type(self, cls: type[HttpProvider], preferred: str) -> HttpProvider | None:
        """The provider named `preferred` if it is a `cls`, else the first that is."""
        found = self.http.get(preferred)
        if isinstance(found, cls):
            return found
        return next((p for p in self.http.values() if isinstance(p, cls)), None)

    # -------------------------------------------------------------- routing

    def resolve(self, name: str | None, default: str, aliases: Mapping[str, str]) -> tuple[str, str]:
        """`provider/model`, an alias, a bare id, or the default -> (provider, model)."""
        return resolve_model(name, default, aliases, self._bare, self._all)

    def _bare(self, model: str) -> str | None:
        """A bare id's provider, in three steps; the first that finds it decides:
        the providers' configured `models`, the public ids of the built-in
        names, then what each provider's GET /models listed."""
        for step in (self._configured(model), _public(model, self.http), self._listed(model)):
            if len(step) == 1:
                return step[0]
            if len(step) > 1:
                raise BadRequest(f"model {model!r} is served by several providers ({', '.join(sorted(step))}); "
                                 f"name one: {', '.join(f'{p}/{model}' for p in sorted(step))}")
        return None

    def _configured(self, model: str) -> list[str]:
        return [name for name, p in self.http.items() if model in p.config.models]

    def _listed(self, model: str) -> list[str]:
        return [name for name, p in self.http.items() if model in p.listed]


def _public(model: str, http: Mapping[str, HttpProvider]) -> list[str]:
    name = provider_of(model)
    return [name] if name is not None and name in http else []


def resolve_model(name: str | None, default: str, aliases: Mapping[str, str],
                  bare: Callable[[str], str | None] = provider_of,
                  known: Container[str] | None = None) -> tuple[str, str]:
    """`provider/model`, an alias from the `models` table, a bare model id
    (`bare` finds its provider), or the default -> (provider, model). An id
    with a slash whose first part names no provider (`known`) is a bare id
    too ("meta-llama/llama-3-70b", listed by OpenRouter)."""
    chosen = name or default
    seen = {chosen}
    while chosen in aliases:
        chosen = aliases[chosen]
        if chosen in seen:
            raise BadRequest(f"model alias loop through {chosen!r}")
        seen.add(chosen)
    provider, sep, model = chosen.partition("/")
    if not sep or (known is not None and provider not in known):
        found = bare(chosen)
        if found is not None:
            return found, chosen
    if not sep or not provider or not model:
        raise BadRequest(
            f"model {chosen!r} is neither PROVIDER/MODEL, a model a provider lists (its `models`, or GET /models), "
            "a known model id (claude-..., gpt-..., o1/o3/o4...) nor an alias from the config's models table"
        )
    return provider, model
