"""`claif models` and `claif log`: what the daemon can be asked for, and what
it was asked lately.

Models: each provider with a key lists its models (`GET models` through the
daemon's pool, no tokens spent), cached for `CATALOG_TTL` seconds; the echo
provider and the config's aliases are listed too. A provider that cannot
answer is reported beside the others, not instead of them.

The request log is the performance monitor's bounded record of recent
completions (time, model, outcome, latency, tokens, cost, cached): never
their content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from claif_client.protocol import Models, RequestLog, Result

from .config import Config
from .dispatch import Conn, Dispatch
from .errors import ClaifdError
from .perf import Perf
from .providers.http import HttpProvider
from .request_log import CompletionLog

__all__ = ["ModelCatalog", "CATALOG_TTL"]

CATALOG_TTL = 300.0
LIST_TIMEOUT = 10.0


class ModelCatalog:
    def __init__(self, providers: dict[str, HttpProvider], config: Callable[[], Config], perf: Perf,
                 log: CompletionLog) -> None:
        self.providers = providers
        self.config = config
        self.perf = perf
        self.log = log
        self._cache: dict[str, tuple[float, list[str]]] = {}

    def __repr__(self) -> str:
        return f"<ModelCatalog cached={sorted(self._cache)}>"

    def register(self, dispatch: Dispatch) -> None:
        dispatch.task(Models, self.on_models)
        dispatch.task(RequestLog, self.on_log)

    async def on_log(self, msg: RequestLog, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await self.log.query(msg.limit, msg.query))

    async def on_models(self, msg: Models, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await self.list(refresh=msg.refresh))

    async def list(self, refresh: bool = False) -> dict[str, Any]:
        config = self.config()
        models: list[dict[str, Any]] = [{"id": "echo/default", "provider": "echo"}]
        errors: dict[str, str] = {}
        now = time.monotonic()
        for name, provider in sorted(self.providers.items()):
            configured = list(provider.config.models)
            models.extend({"id": f"{name}/{model}", "provider": name, "source": "config"} for model in configured)
            if not provider.configured():
                variable = provider.keys.variable
                errors[name] = f"no API key (claif keys set {name}" + (
                    f", or {variable} in the daemon's environment)" if variable else ")")
                continue
            cached = self._cache.get(name)
            if cached is None or refresh or now - cached[0] > CATALOG_TTL:
                try:
                    with anyio.fail_after(LIST_TIMEOUT):
                        cached = (now, await provider.list_models())
                except TimeoutError:
                    errors[name] = f"no answer within {LIST_TIMEOUT:g} s"
                    continue
                except ClaifdError as exc:
                    errors[name] = exc.message
                    continue
                self._cache[name] = cached
            models.extend({"id": f"{name}/{model}", "provider": name, "source": "discovered"}
                          for model in cached[1] if model not in configured)
        return {"models": models, "aliases": dict(config.models), "default": config.client.model,
                "errors": errors}
