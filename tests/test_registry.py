"""The provider registry (claifd/providers/registry.py): every type has its
config section, is built once, is wired to that section, and owns the bare
model ids of its prefixes."""

from __future__ import annotations

import pytest

from claifd.config import build_config
from claifd.pool import HttpPool
from claifd.providers import TYPES, build, provider_of, resolve_model, section_of
from claifd.providers.http import HttpProvider
from claifd.types import UpstreamCounters


def test_each_type_is_built_on_its_own_section() -> None:
    config = build_config({"providers": {kind.name: {"max_concurrency": 3 + i} for i, kind in enumerate(TYPES)}})
    providers = build(HttpPool(config.pool), UpstreamCounters(), config)
    assert set(providers) == {"echo", *(kind.name for kind in TYPES)}
    for i, kind in enumerate(TYPES):
        provider = providers[kind.name]
        assert type(provider) is kind.cls and isinstance(provider, HttpProvider) and provider.name == kind.name
        assert provider.config is section_of(config, kind.name) and provider.config.max_concurrency == 3 + i


@pytest.mark.parametrize("kind", TYPES, ids=[kind.name for kind in TYPES])
def test_bare_model_ids_go_to_the_type_of_their_prefix(kind) -> None:  # type: ignore[no-untyped-def]
    for prefix in kind.prefixes:
        model = prefix + ("-x" if len(prefix) == 2 else "x")
        assert provider_of(model) == kind.name
        assert resolve_model(model, "echo/x", {}) == (kind.name, model)
    assert provider_of("mistral-large") is None
