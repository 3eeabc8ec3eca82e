"""The configuration requests of the socket protocol, and the one place that
changes the live configuration at run time (reloads and sets, one at a time,
files read and written in a worker thread)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from claif_client.connection import PROJECT_FILE
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

from .callers import Caller, Callers
from .config import Config, ConfigError, to_builtins
from .config_manager import Change, ConfigManager, FileRead, Scope, is_caller_key, redact
from .dispatch import Conn, Dispatch
from .errors import BadRequest, NotFound

__all__ = ["LiveConfig"]

_SCOPES = ("runtime", "project", "global")
# Keys read once, when the daemon starts (docs/CONFIGURATION.md marks them `restart`), and why.
RESTART_ONLY = {"cache.compression": "the disk tier's compression is chosen when it opens"}


class LiveConfig:
    def __init__(self, settings: ConfigManager, callers: Callers) -> None:
        self.settings = settings
        self.callers = callers
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

    async def set(self, key: str, value: Any, scope: Scope, caller: Caller | None = None) -> list[Change]:
        """Set `key` in a layer; `caller`: the project file is that caller's."""
        async with self._lock:
            if scope == "runtime":
                return self.settings.set_runtime(key, value)
            if scope == "project" and caller is not None:
                layer = await anyio.to_thread.run_sync(self.settings.write_file_setting, scope, key, value,
                                                       caller.path)
                self.callers.adopt_layer(caller, layer)
                # The daemon's own project file too (a caller in the daemon's directory)?
                return self.settings.adopt_layer(scope, layer) if self._is_ours(caller) else []
            layer = await anyio.to_thread.run_sync(self.settings.write_file_setting, scope, key, value)
            return self.settings.adopt_layer(scope, layer)

    def _is_ours(self, caller: Caller) -> bool:
        return os.path.abspath(caller.path) == os.path.abspath(self.settings.project_path)

    async def project_of(self, conn: Conn) -> Caller | None:
        """The caller whose project file `--scope project` edits: the one it
        found, else a new `.claif.json` in its working directory (None: it did
        not say where it runs, so the daemon's own project file)."""
        if conn.caller is None and conn.cwd:
            conn.caller = await self.callers.load(os.path.join(conn.cwd, PROJECT_FILE))
        return conn.caller

    # ---------------------------------------------------------- requests

    def register(self, dispatch: Dispatch) -> None:
        settings = self.settings
        dispatch.inline(ConfigGet, self.on_get)
        dispatch.inline(ConfigShow, self.on_show)
        dispatch.inline(ConfigSources, self.on_sources)
        dispatch.inline(ConfigValidate, lambda msg, conn: Result(id=msg.id, value=settings.validate_text(msg.text, msg.name)))
        dispatch.task(ConfigSet, self.on_set)
        dispatch.task(ConfigUnset, self.on_unset)
        dispatch.task(ConfigReload, self.on_reload)

    def on_get(self, msg: ConfigGet, conn: Conn) -> Result | Error:
        caller = conn.caller
        try:
            value, source = self.settings.get(msg.key, *_view(caller))
        except KeyError:
            return Error(id=msg.id, code=ErrorCode.NOT_FOUND, message=f"no config key {msg.key!r}")
        return Result(id=msg.id, value={"key": msg.key, "value": value, "source": source})

    def on_show(self, msg: ConfigShow, conn: Conn) -> Result:
        caller = conn.caller
        return Result(id=msg.id, value=redact(to_builtins(caller.config)) if caller is not None else self.settings.show())

    def on_sources(self, msg: ConfigSources, conn: Conn) -> Result:
        settings = self.settings
        sources = settings.sources_info()
        caller = conn.caller
        doc: dict[str, Any] = {"generation": settings.generation, "last_error": settings.last_error}
        if caller is not None:
            # This caller's project file in place of the daemon's (for the caller keys).
            sources = [caller.source.as_dict() if s["layer"] == "project" else s for s in sources]
            doc["project_warnings"] = caller.warnings()
        doc["sources"] = sources
        return Result(id=msg.id, value=doc)

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
        caller = await self.project_of(conn) if msg.scope == "project" else conn.caller
        if msg.scope == "project" and caller is not None and not is_caller_key(msg.key) and not self._is_ours(caller):
            raise BadRequest(f"config not changed: {msg.key} is the daemon's, one for every caller; a project file "
                             f"({caller.path}) decides only client, models, auto, optimizer, routing, batch, "
                             f"cache.enabled and cache.namespace: use --scope global (or runtime)")
        try:
            changes = await self.set(msg.key, msg.value, msg.scope, caller)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise BadRequest(f"config not changed: {exc}") from exc
        except OSError as exc:
            raise BadRequest(f"config not changed: cannot write the {msg.scope} file: {exc.strerror or exc}") from exc
        value, source = self.settings.get(msg.key, *_view(caller))
        written = redact(msg.value, msg.key)
        path = str(caller.path) if msg.scope == "project" and caller is not None else self.settings.path_of(msg.scope)
        doc = {"key": msg.key, "written": written, "scope": msg.scope, "path": path,
               "value": value, "source": source, "generation": self.settings.generation,
               "changed": [c.key for c in changes]}
        if why_restart is not None:
            doc["notice"] = f"{msg.key} takes effect when the daemon restarts ({why_restart})"
        return Result(id=msg.id, value=doc)

    async def on_unset(self, msg: ConfigUnset, conn: Conn, _: None) -> Result:
        if msg.scope not in _SCOPES:
            raise BadRequest(f"unknown scope {msg.scope!r} (runtime, project or global)")
        caller = await self.project_of(conn) if msg.scope == "project" else conn.caller
        try:
            async with self._lock:
                if msg.scope == "runtime":
                    changes = self.settings.unset_runtime(msg.key)
                elif msg.scope == "project" and caller is not None:
                    layer = await anyio.to_thread.run_sync(
                        self.settings.unset_file_setting, msg.scope, msg.key, caller.path  # type: ignore[arg-type]
                    )
                    self.callers.adopt_layer(caller, layer)
                    changes = self.settings.adopt_layer(msg.scope, layer) if self._is_ours(caller) else []
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
            value, source = self.settings.get(msg.key, *_view(caller))
        except KeyError:  # its section went with it (the last key of a providers.NAME)
            value, source = None, None
        return Result(id=msg.id, value={"key": msg.key, "scope": msg.scope, "value": value, "source": source,
                                        "generation": self.settings.generation, "changed": [c.key for c in changes]})

    async def on_reload(self, msg: ConfigReload, conn: Conn, _: None) -> Result:
        changes = await self.reload("config reload request")
        if conn.caller is not None:
            await self.callers.refresh(conn.caller)
        settings = self.settings
        return Result(id=msg.id, value={
            "generation": settings.generation, "changed": [c.key for c in changes], "error": settings.last_error,
        })


def _view(caller: Caller | None) -> tuple[dict[str, Any] | None, Config | None]:
    """`ConfigManager.get`'s view arguments for a caller (project layer, configuration)."""
    return (caller.layer, caller.config) if caller is not None else (None, None)
