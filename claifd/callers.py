"""Each caller's project layer: the `.claif.json` nearest to where a client
runs, not to where the daemon runs.

A client says in its Hello where it runs and which project file it found
(the nearest `.claif.json` at or above its working directory). For that
connection's requests the daemon uses that file as the project layer of the
caller keys (`config_manager.CALLER_KEYS`: the model, aliases, the
optimizer, routing, batch, the cache namespace); every other key stays the
daemon's, one for all. A caller that found no file, and the HTTP front, see
the daemon's own configuration.

Files are read in a worker thread, kept per path (the most recent
`MAX_CALLERS`) and watched: an edit applies to the next request. A broken
edit keeps the file's last good content serving, with the error in
`config sources` (asked from that project) and in the log.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog
import watchfiles

from .config import Config, ConfigError, unknown_keys
from .config.edits import _unknown_leaves, did_you_mean, flatten
from .config_manager import ConfigManager, FileRead, Source, is_caller_key, read_layer

__all__ = ["Caller", "Callers", "MAX_CALLERS"]

log = structlog.get_logger("claifd.config")

MAX_CALLERS = 64
WATCH_DEBOUNCE_MS = 50


class Caller:
    """One project file and what its callers see."""

    __slots__ = ("path", "layer", "source", "config", "hot_keys")

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        # The file's last good content (the caller's project layer).
        self.layer: dict[str, Any] = {}
        self.source = Source("project", path)
        # What its requests see (`ConfigManager.caller_config`).
        self.config = config
        # Raw request bytes -> cache key under this configuration (the hot path's shortcut).
        self.hot_keys: dict[bytes, str] = {}

    def __repr__(self) -> str:
        return f"<Caller {self.path} error={self.source.error!r}>"

    def ignored(self) -> list[str]:
        """Keys its file sets that only the daemon's own files decide."""
        unknown = set(_unknown_leaves(self.layer))
        return [key for key in flatten(self.layer) if key not in unknown and not is_caller_key(key)]

    def warnings(self) -> list[str]:
        out = [f"unknown key {key!r} in {self.path}{did_you_mean(key)}" for key in _unknown_leaves(self.layer)]
        ignored = self.ignored()
        if ignored:
            out.append(f"{self.path} sets {', '.join(ignored)}: a project file decides only the caller keys "
                       f"(client, models, auto, optimizer, routing, batch, cache.enabled, cache.namespace); "
                       f"set the others in the global file")
        return out


class Callers:
    def __init__(self, settings: ConfigManager) -> None:
        self.settings = settings
        self._by_path: collections.OrderedDict[str, Caller] = collections.OrderedDict()
        # Set when the set of watched files changes (the watcher restarts) or at stop.
        self._rewatch = anyio.Event()
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Callers files={len(self._by_path)}>"

    def known(self, path: str) -> Caller | None:
        """The caller of a project file already read (and watched since), or None."""
        caller = self._by_path.get(path)
        if caller is not None:
            self._by_path.move_to_end(path)
        return caller

    async def load(self, path: str) -> Caller:
        """The caller of a project file, read now (in a worker thread) if new."""
        read = await anyio.to_thread.run_sync(read_layer, Path(path))
        caller = self._by_path.get(path)
        if caller is None:
            caller = Caller(Path(path), self.settings.config)
            self._by_path[path] = caller
            if len(self._by_path) > MAX_CALLERS:
                self._by_path.popitem(last=False)
            self._rewatch.set()
        self._adopt(caller, read)
        return caller

    async def refresh(self, caller: Caller) -> None:
        """Re-read a caller's file now (`config reload` asked from its project)."""
        self._adopt(caller, await anyio.to_thread.run_sync(read_layer, caller.path))

    def adopt_layer(self, caller: Caller, layer: dict[str, Any]) -> None:
        """A layer just written by `config set --scope project` from this caller."""
        self._adopt(caller, FileRead(exists=True, data=layer))

    def _adopt(self, caller: Caller, read: FileRead) -> None:
        source = caller.source
        source.exists = read.exists
        if read.error is not None:
            source.error = read.error
            log.warning("a caller's project config is invalid; keeping its last good content",
                        file=str(caller.path), error=read.error)
            return
        data = read.data or {}
        try:
            config = self.settings.caller_config(data)
        except ConfigError as exc:
            source.error = f"{caller.path}: {exc}"
            log.warning("a caller's project config is invalid; keeping its last good content",
                        file=str(caller.path), error=str(exc))
            return
        caller.layer = data
        caller.config = config
        caller.hot_keys = {}
        source.loaded = read.exists
        source.error = None
        source.unknown_keys = unknown_keys(data)
        for warning in caller.warnings():
            log.warning("caller project config", warning=warning)

    def reconfigure(self, config: Config) -> None:
        """The daemon's configuration changed: every caller's view is rebuilt (no I/O)."""
        for caller in self._by_path.values():
            try:
                caller.config = self.settings.caller_config(caller.layer)
            except ConfigError as exc:  # its layer no longer fits the daemon's: it is left out until fixed
                caller.config = config
                caller.source.error = f"{caller.path}: {exc}"
                log.warning("a caller's project config no longer applies", file=str(caller.path), error=str(exc))
            caller.hot_keys = {}

    # ------------------------------------------------------------ watching

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Re-read a caller's file when it is written, renamed over, created
        or deleted; the directories watched follow the files known."""
        task_status.started()
        while not self._stopped:
            rewatch = self._rewatch = anyio.Event()
            targets = {str(caller.path): caller for caller in self._by_path.values()}
            directories = sorted({os.path.dirname(t) for t in targets if os.path.isdir(os.path.dirname(t))})
            if not directories:
                await rewatch.wait()
                continue
            async for changes in watchfiles.awatch(
                *directories, recursive=False, debounce=WATCH_DEBOUNCE_MS, step=10, ignore_permission_denied=True,
                stop_event=rewatch,
            ):
                for path in {changed for _, changed in changes if changed in targets}:
                    await self.refresh(targets[path])

    def stop(self) -> None:
        """End `watch` within one step (its thread would otherwise wait out its timeout)."""
        self._stopped = True
        self._rewatch.set()

