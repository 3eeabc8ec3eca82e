"""The provider registry (claifd/providers/registry.py): every type has its
config section, is built once, is wired to that section, and owns the bare
model ids of its prefixes."""

from __future__ import annotations

import pytest

from claifd.config import build_config
from claifd.pool import HttpPool
from claifd.providers import TYPES, AnthropicProvider, Providers, provider_of, resolve_model
from claifd.providers.http import HttpProvider
from claifd.types import UpstreamCounters


def test_each_section_is_built_as_its_type_and_follows_its_changes() -> None:
    sections = {f"mine-{kind.name}": {"type": kind.name, "base_url": "http://127.0.0.1:9", "max_concurrency": 3 + i}
                for i, kind in enumerate(TYPES)}
    config = build_config({"providers": sections})
    providers = Providers(HttpPool(config.pool), UpstreamCounters(), config)
    assert set(providers) == {"echo", "anthropic", "openai", *sections}
    for i, kind in enumerate(TYPES):
        provider = providers[f"mine-{kind.name}"]
        assert type(provider) is kind.cls and isinstance(provider, HttpProvider)
        assert provider.name == f"mine-{kind.name}" and provider.config.max_concurrency == 3 + i
    kept = providers["mine-openai"]
    changed = build_config({"providers": {"mine-openai": {"base_url": "http://127.0.0.1:8", "models": ["m"]},
                                          "mine-azure": {"type": "anthropic"}}})
    providers.reconfigure(changed.providers)
    assert providers["mine-openai"] is kept and kept.config.base_url == "http://127.0.0.1:8"  # reconfigured
    assert type(providers["mine-azure"]) is AnthropicProvider  # another type: rebuilt
    assert "mine-anthropic" not in providers  # removed
    assert providers.resolve("m", "echo/x", {}) == ("mine-openai", "m")


@pytest.mark.parametrize("kind", TYPES, ids=[kind.name for kind in TYPES])
def test_bare_model_ids_go_to_the_type_of_their_prefix(kind) -> None:  # type: ignore[no-untyped-def]
    for prefix in kind.prefixes:
        model = prefix + ("-x" if len(prefix) == 2 else "x")
        assert provider_of(model) == kind.name
        assert resolve_model(model, "echo/x", {}) == (kind.name, model)
    assert provider_of("mistral-large") is None
