"""docs/PROVIDERS.md: every JSON block is a valid configuration, and every
preset sends what its service expects (URL, key header, extra headers),
checked on a real request to the simulator at the preset's own path."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

from claif_client import Client
from claifd.config import build_config

from .conftest import Sim, sim_env

DOC = Path(__file__).parent.parent / "docs" / "PROVIDERS.md"
BLOCKS = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]
PRESETS = {name: section for block in BLOCKS for name, section in block.get("providers", {}).items()
           if "base_url" in section}


def test_every_block_is_a_valid_configuration() -> None:
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        build_config(block)
    assert set(PRESETS) >= {"ollama", "vllm", "openrouter", "groq", "together", "deepseek", "gemini", "azure"}


def test_each_preset_sends_what_its_service_expects(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    env = sim_env(sim)
    for name, section in PRESETS.items():
        path = urllib.parse.urlsplit(section["base_url"]).path
        env[f"CLAIF_PROVIDERS__{name.upper()}__BASE_URL"] = sim.url + path
        for key in ("type", "api_version", "api_key_env"):
            if key in section:
                env[f"CLAIF_PROVIDERS__{name.upper()}__{key.upper()}"] = section[key]
        if "api_key_env" in section:
            env[section["api_key_env"]] = f"sk-{name}-test-key-0000"
    sim.configure(require_key=False)
    d = daemon_factory(env=env)
    with Client(d.socket) as c:
        for name, section in PRESETS.items():
            for key in ("headers", "models"):
                if key in section:
                    c.config_set(f"providers.{name}.{key}", section[key])
        for name, section in PRESETS.items():
            model = section["models"][0]
            reply = c.complete(f"hello {name}", model=model)  # by its bare id, from the preset's list
            assert reply.text == f"Simulated reply to: hello {name}" and reply.model.startswith(f"{name}/")
            sent = sim.requests()[-1]
            path = urllib.parse.urlsplit(section["base_url"]).path
            if section.get("type") == "azure":
                deployment = urllib.parse.quote(model, safe="")
                assert sent["target"] == (f"{path}/openai/deployments/{deployment}/chat/completions"
                                          f"?api-version={section['api_version']}")
                assert sent["key_header"] == "api-key"
            else:
                assert sent["target"] == f"{path}/chat/completions" and sent["body"]["model"] == model
                assert sent["key_header"] == ("authorization" if "api_key_env" in section else None)
            for header, value in section.get("headers", {}).items():
                assert sent["headers"][header.lower()] == value
    assert d.stop() == 0
