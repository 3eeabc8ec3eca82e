"""Sizes ("100MB", "64 MiB", or bytes) and durations (seconds, or "30s",
"5m", "1h"): parsed here and nowhere else, by the `ByteSize` and `Duration`
types the schema uses."""

from __future__ import annotations

import math
import re
from typing import Any


class ByteSize(int):
    """A size in bytes; accepts integers or strings like "100MB" / "64 MiB"."""


class Duration(float):
    """A duration in seconds; accepts numbers or strings like "30s", "5m", "1h"."""


_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"size must be a finite number of bytes, not negative: {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"not a size: {value!r} (use bytes or e.g. '100MB', '64MiB')")


def parse_duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration must be a finite number of seconds, not negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m and m.group(2).lower() in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '5m', '1h')")


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is ByteSize:
        return ByteSize(parse_size(value))
    if type_ is Duration:
        return Duration(parse_duration(value))
    raise NotImplementedError(f"no decoder for {type_}")


def _enc_hook(value: Any) -> Any:
    if isinstance(value, ByteSize):
        return int(value)
    if isinstance(value, Duration):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value)}")


# --------------------------------------------------------------------------
# The schema. Every field has a default, so an empty file is a valid config.


