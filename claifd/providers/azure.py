"""Azure OpenAI: the OpenAI Chat Completions API with Azure's addressing.

    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=V
    header api-key: KEY (not a Bearer token)

The model named in a request (`azure/my-gpt4o-deployment`) is the
deployment; `base_url` is the resource's endpoint
(`https://RESOURCE.openai.azure.com`), `api_version` the API's version.
Everything else -- the body, the answer, the stream -- is OpenAI's.
"""

from __future__ import annotations

import urllib.parse

from ..config import ProviderConfig
from .openai import OpenAIProvider

__all__ = ["AzureProvider"]


class AzureProvider(OpenAIProvider):
    env_key = ""
    default_base_url = ""
    default_model = ""  # (deployments have the names you gave them)

    def _deployment(self, config: ProviderConfig, model: str, operation: str) -> str:
        quoted = urllib.parse.quote(model, safe="")
        return (f"{self.base_url(config)}/openai/deployments/{quoted}/{operation}"
                f"?api-version={urllib.parse.quote(config.api_version)}")

    def url(self, config: ProviderConfig, model: str) -> str:
        return self._deployment(config, model, "chat/completions")

    def embeddings_url(self, config: ProviderConfig, model: str) -> str:
        return self._deployment(config, model, "embeddings")

    def models_url(self, config: ProviderConfig) -> str:
        return f"{self.base_url(config)}/openai/models?api-version={urllib.parse.quote(config.api_version)}"

    def headers(self, config: ProviderConfig, key: str) -> dict[str, str]:
        return {"api-key": key, "content-type": "application/json"} if key else {"content-type": "application/json"}
