"""The provider types, and how a model name finds its provider.

A provider type is one entry of `TYPES`:

    name        its section `providers.NAME` in the configuration and the
                prefix of its models ("anthropic/claude-sonnet-4-5")
    cls         the HttpProvider subclass that speaks its API (its module:
                the request it sends, the answer and the stream it reads)
    prefixes    bare model ids it serves ("claude-..." -> anthropic)

To add one: its module in providers/, its config section class in
config/schema.py's ProvidersConfig, and one line here. `build` makes one provider
of each type (and the offline `echo`), and the app wires each to its
section; `resolve_model` routes by the prefixes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ..config import Config, ProviderConfig
from ..errors import BadRequest
from ..perf import Perf
from ..pool import HttpPool
from ..types import UpstreamCounters
from .anthropic import AnthropicProvider
from .base import Provider
from .echo import EchoProvider
from .http import HttpProvider
from .openai import OpenAIProvider

__all__ = ["TYPES", "ProviderType", "build", "provider_of", "resolve_model", "section_of"]


class ProviderType(NamedTuple):
    name: str
    cls: type[HttpProvider]
    prefixes: tuple[str, ...]


TYPES = (
    ProviderType("anthropic", AnthropicProvider, ("claude-",)),
    ProviderType("openai", OpenAIProvider, ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-")),
)


def section_of(config: Config, name: str) -> ProviderConfig | None:
    """The `providers.NAME` section of a provider type, or None."""
    section = getattr(config.providers, name, None)
    return section if isinstance(section, ProviderConfig) else None


def build(pool: HttpPool, counters: UpstreamCounters, config: Config, clock: Callable[[], float] = time.monotonic,
          perf: Perf | None = None) -> dict[str, Provider]:
    """A provider of each type, on its section of `config`, and `echo`."""
    providers: dict[str, Provider] = {"echo": EchoProvider(counters)}
    for kind in TYPES:
        section = section_of(config, kind.name)
        assert section is not None, f"config/schema.py's ProvidersConfig has no section {kind.name!r}"
        providers[kind.name] = kind.cls(pool, counters, section, config.retry, clock=clock, perf=perf)
    return providers


def provider_of(model: str) -> str | None:
    """The provider of a bare model id ("claude-3-5-haiku-20241022" -> "anthropic"), or None."""
    for kind in TYPES:
        for prefix in kind.prefixes:
            if model.startswith(prefix) and (len(prefix) > 2 or len(model) == 2 or model[2] in "-."):
                return kind.name
    return None


def resolve_model(name: str | None, default: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    """`provider/model`, an alias from the `models` table, a bare model id
    of a known prefix, or the default -> (provider, model)."""
    chosen = name or default
    seen = {chosen}
    while chosen in aliases:
        chosen = aliases[chosen]
        if chosen in seen:
            raise BadRequest(f"model alias loop through {chosen!r}")
        seen.add(chosen)
    provider, sep, model = chosen.partition("/")
    if not sep:
        guessed = provider_of(chosen)
        if guessed is not None:
            return guessed, chosen
    if not sep or not provider or not model:
        raise BadRequest(
            f"model {chosen!r} is neither PROVIDER/MODEL, a known model id (claude-..., gpt-..., o1/o3/o4...) "
            "nor an alias from the config's models table"
        )
    return provider, model
