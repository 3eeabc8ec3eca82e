"""structlog set-up: JSON lines to stderr (console rendering on a terminal).

Request ids are bound with `structlog.contextvars`, so every line a request's
task logs carries them. Loggers are not cached, so `set_level` takes effect at
once for every module (config reloads call it).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "set_level", "LEVELS"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

_processors: list[Any] = []


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})") from None


def configure_logging(fmt: str | None = None, level: str = "info") -> None:
    """`fmt`: "json", "console", or None to choose by whether stderr is a TTY."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    _processors[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt != "console":  # the console renderer formats exceptions itself
        _processors.append(structlog.processors.format_exc_info)
    _processors.append(renderer)
    structlog.configure(
        processors=_processors,
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)))
