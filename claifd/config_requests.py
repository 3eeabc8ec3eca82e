"""The configuration requests of the socket protocol, and the one place that
changes the live configuration at run time (reloads and sets, one at a time,
files read and written in a worker thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from claif_client.protocol import (
    ConfigGet,
    ConfigReload,
    ConfigSet,
    ConfigShow,
    ConfigSources,
    ConfigUnset,
    ConfigValidate,
    Error,
    ErrorCode,
    Result,
)

from .config import ConfigError
from .config_manager import Change, ConfigManager, FileRead, Scope, redact
from .dispatch import Conn, Dispatch
from .errors import BadRequest, NotFound

__all__ = ["LiveConfig"]

_SCOPES = ("runtime", "project", "global")
# Keys read once, when the daemon starts (docs/CONFIGURATION.md marks them `restart`), and why.
RESTART_ONLY = {"cache.compression": "the disk tier's compression is chosen when it opens"}


class LiveConfig:
    def __init__(self, settings: ConfigManager) -> None:
        self.settings = settings
        self._lock = anyio.Lock()
        # (before, after) a reload: the daemon tells systemd (RELOADING=1 ... READY=1).
        self.around_reload: tuple[Callable[[], None], Callable[[], None]] | None = None
        # Checks of the world a value must pass before `config set` accepts it,
        # by key: why not, or None (a listen address another process holds).
        self.probes: dict[str, Callable[[Any], str | None]] = {}

    def __repr__(self) -> str:
        return f"<LiveConfig generation={self.settings.generation} error={self.settings.last_error!r}>"

    async def reload(self, reason: str) -> list[Change]:
        """Re-read the config files (in a worker thread) and apply them."""
        async with self._lock:
            hooks = self.around_reload
            if hooks is not None:
                hooks[0]()
            try:
                reads: dict[str, FileRead] = await anyio.to_thread.run_sync(self.settings.read_files)
                return self.settings.apply_reads(reads, reason)
            finally:
                if hooks is not None:
                    hooks[1]()

    async def set(self, key: str, value: Any, scope: Scope) -> list[Change]:
        async with self._lock:
            if scope == "runtime":
                return self.settings.set_runtime(key, value)
            layer = await anyio.to_thread.run_sync(self.settings.write_file_setting, scope, key, value)
            return self.settings.adopt_layer(scope, layer)

    # ---------------------------------------------------------- requests

    def register(self, dispatch: Dispatch) -> None:
        settings = self.settings
        dispatch.inline(ConfigGet, self.on_get)
        dispatch.inline(ConfigShow, lambda msg, conn: Result(id=msg.id, value=settings.show()))
        dispatch.inline(ConfigSources, lambda msg, conn: Result(id=msg.id, value={
            "generation": settings.generation, "last_error": settings.last_error, "sources": settings.sources_info(),
        }))
        dispatch.inline(ConfigValidate, lambda msg, conn: Result(id=msg.id, value=settings.validate_text(msg.text, msg.name)))
        dispatch.task(ConfigSet, self.on_set)
        dispatch.task(ConfigUnset, self.on_unset)
        dispatch.task(ConfigReload, self.on_reload)

    def on_get(self, msg: ConfigGet, conn: Conn) -> Result | Error:
        try:
            value, source = self.settings.get(msg.key)
        except KeyError:
            return Error(id=msg.id, code=ErrorCode.NOT_FOUND, message=f"no config key {msg.key!r}")
        return Result(id=msg.id, value={"key": msg.key, "value": value, "source": source})

    async def on_set(self, msg: ConfigSet, conn: Conn, _: None) -> Result:
        if msg.scope not in _SCOPES:
            raise BadRequest(f"unknown scope {msg.scope!r} (runtime, project or global)")
        why_restart = RESTART_ONLY.get(msg.key)
        if why_restart is not None and msg.scope == "runtime":
            raise BadRequest(f"config not changed: {msg.key} is read at start only ({why_restart}), and the runtime "
                             f"layer ends with the daemon: set it with --scope global (or project), then restart")
        probe = self.probes.get(msg.key)
        why = await anyio.to_thread.run_sync(probe, msg.value) if probe is not None else None
        if why is not None:
            raise BadRequest(f"config not changed: {why}")
        try:
            changes = await self.set(msg.key, msg.value, msg.scope)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise BadRequest(f"config not changed: {exc}") from exc
        except OSError as exc:
            raise BadRequest(f"config not changed: cannot write the {msg.scope} file: {exc.strerror or exc}") from exc
        value, source = self.settings.get(msg.key)
        written = redact(msg.value, msg.key)
        doc = {"key": msg.key, "written": written, "scope": msg.scope, "path": self.settings.path_of(msg.scope),
               "value": value, "source": source, "generation": self.settings.generation,
               "changed": [c.key for c in changes]}
        if why_restart is not None:
            doc["notice"] = f"{msg.key} takes effect when the daemon restarts ({why_restart})"
        return Result(id=msg.id, value=doc)

    async def on_unset(self, msg: ConfigUnset, conn: Conn, _: None) -> Result:
        if msg.scope not in _SCOPES:
            raise BadRequest(f"unknown scope {msg.scope!r} (runtime, project or global)")
        try:
            async with self._lock:
                if msg.scope == "runtime":
                    changes = self.settings.unset_runtime(msg.key)
                else:
                    layer = await anyio.to_thread.run_sync(
                        self.settings.unset_file_setting, msg.scope, msg.key  # type: ignore[arg-type]
                    )
                    changes = self.settings.adopt_layer(msg.scope, layer)
        except KeyError:
            raise NotFound(f"the {msg.scope} layer does not set {msg.key!r}") from None
        except ConfigError as exc:
            raise BadRequest(f"config not changed: {exc}") from exc
        except OSError as exc:
            raise BadRequest(f"config not changed: cannot write the {msg.scope} file: {exc.strerror or exc}") from exc
        try:
            value, source = self.settings.get(msg.key)
        except KeyError:  # its section went with it (the last key of a providers.NAME)
            value, source = None, None
        return Result(id=msg.id, value={"key": msg.key, "scope": msg.scope, "value": value, "source": source,
                                        "generation": self.settings.generation, "changed": [c.key for c in changes]})

    async def on_reload(self, msg: ConfigReload, conn: Conn, _: None) -> Result:
        changes = await self.reload("config reload request")
        settings = self.settings
        return Result(id=msg.id, value={
            "generation": settings.generation, "changed": [c.key for c in changes], "error": settings.last_error,
        })
