"""structlog set-up: JSON lines to stderr (console rendering on a terminal).

Under journald (`$JOURNAL_STREAM` names stderr, as systemd sets it for a
service) each line starts with its syslog priority, `<3>` for an error, `<4>`
a warning, `<6>` info, `<7>` debug, so `journalctl -p warning` filters them
(journald strips the prefix and stores the priority).

Request ids are bound with `structlog.contextvars`, so every line a request's
task logs carries them. Loggers are not cached, so `set_level` takes effect at
once for every module (config reloads call it).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "set_level", "LEVELS", "under_journald", "PRIORITIES"]

# syslog(3) priorities by level, for journald's "<N>" line prefix.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

_processors: list[Any] = []


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})") from None


def under_journald() -> bool:
    """Whether stderr is the journal stream systemd connected (`$JOURNAL_STREAM` = "DEV:INODE")."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _Prioritized:
    """A renderer whose lines start with the journald priority of their level."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> str:
        priority = PRIORITIES.get(str(event_dict.get("level", name)), 6)
        return f"<{priority}>{self.renderer(logger, name, event_dict)}"


def configure_logging(fmt: str | None = None, level: str = "info") -> None:
    """`fmt`: "json", "console", or None to choose by whether stderr is a TTY."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    if under_journald():
        renderer = _Prioritized(renderer)
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
