"""A provider's API keys: requests spread over them, a key that got a 429
rests for its retry-after, a key that got a 401 or 403 is set aside (health
names it) until the provider's configuration changes -- or, when every key
was refused, until one of them works again (they are still tried then: the
provider's own 401 is the truest answer).

Keys come from `api_key`, then `api_keys`, then the variable `api_key_env`
names (for the built-in names, their SDK's own variable when none is set).
Status shows each key by its last four characters only. A provider of the
user's with no key at all sends none (a local Ollama or vLLM needs none);
the built-in names need one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..config import ProviderConfig
from ..errors import NotConfigured, RateLimited

__all__ = ["KeyRing"]

# A 429 without retry-after rests its key this long (none: the next key is taken anyway, round robin).
DEFAULT_COOLDOWN = 0.0


_TIMER_SLACK = 0.002

class _Key:
    __slots__ = ("value", "resting_until", "refused", "uses")

    def __init__(self, value: str) -> None:
        self.value = value
        self.resting_until = 0.0
        self.refused: str | None = None
        self.uses = 0


class KeyRing:
    def __init__(self, name: str, config: ProviderConfig, env_key: str, required: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        # A provider of the user's (Ollama, vLLM...) may need no key: "" is sent as none.
        self.required = required
        values = [v for v in [config.api_key, *config.api_keys] if v]
        variable = config.api_key_env or env_key
        if not values and variable and os.environ.get(variable):
            values = [os.environ[variable]]
        self.variable = variable
        self.keys = [_Key(v) for v in dict.fromkeys(values)]
        self._next = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"<KeyRing {self.name} keys={len(self.keys)} usable={len(self.usable())}>"

    def usable(self) -> list[str]:
        now = self.clock()
        return [k.value for k in self.keys if k.refused is None and k.resting_until <= now]

    def pick(self) -> str:
        """The next usable key, round robin; RateLimited when all rest (with the
        wait for the first to wake), NotConfigured when there is none."""
        if not self.keys and not self.required:
            return ""
        if not self.keys:
            env = f" or {self.variable} from its own environment (the systemd service: ~/.config/claif/env)" \
                if self.variable else ""
            raise NotConfigured(
                f"no API key for {self.name}: the daemon reads providers.{self.name}.api_key (or api_keys) from its "
                f"config (`claif keys set {self.name}`){env}; a key exported in your shell does not reach a daemon "
                f"already running")
        # (A wait the retry policy slept may end a hair early: the event loop's
        # timers have millisecond resolution.)
        now = self.clock() + _TIMER_SLACK
        count = len(self.keys)
        for step in range(count):
            key = self.keys[(self._next + step) % count]
            if key.refused is None and key.resting_until <= now:
                self._next = (self._next + step + 1) % count
                key.uses += 1
                return key.value
        alive = [k for k in self.keys if k.refused is None]
        if not alive:
            # Every key was refused: they are still tried (the provider's own 401
            # is the truest answer, and a key fixed on its side works again).
            key = self.keys[self._next % count]
            self._next = (self._next + 1) % count
            key.uses += 1
            return key.value
        wait = min(k.resting_until for k in alive) - now
        raise RateLimited(f"every API key of {self.name} is rate limited for {wait:.1f} s more",
                          retry_after=max(wait, 0.0), details={"provider": self.name})

    def rest(self, value: str, retry_after: float | None) -> None:
        """A 429 on this key: it rests, the others carry on."""
        for key in self.keys:
            if key.value == value:
                key.resting_until = self.clock() + (retry_after if retry_after is not None else DEFAULT_COOLDOWN)

    def refuse(self, value: str, status: int) -> bool:
        """A 401/403 on this key: set aside. True if another key is left to try."""
        for key in self.keys:
            if key.value == value:
                key.refused = f"refused with {status}"
        return any(k.refused is None for k in self.keys)

    def worked(self, value: str) -> None:
        """An answer came with this key: if it was refused, it is back."""
        for key in self.keys:
            if key.value == value and key.refused is not None:
                key.refused = None

    def refused(self) -> list[str]:
        return [_label(i, k.value) for i, k in enumerate(self.keys) if k.refused is not None]

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for i, key in enumerate(self.keys):
            state = "refused" if key.refused else "resting" if key.resting_until > now else "ok"
            entry: dict[str, Any] = {"key": _label(i, key.value), "state": state, "uses": key.uses}
            if state == "resting":
                entry["rest_s"] = round(key.resting_until - now, 3)
            out.append(entry)
        return out


def _label(index: int, value: str) -> str:
    """`#1 ...WXYZ`: the last four characters only (never 8 in a row: see redaction.py)."""
    return f"#{index + 1} ...{value[-4:]}" if len(value) >= 12 else f"#{index + 1}"
