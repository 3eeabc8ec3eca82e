"""`claif`: the command line for the claifd daemon.

Exit codes: 0 success, 1 an error answered by the daemon (or a local one),
2 usage error, 3 the daemon is unreachable, 130 interrupted. Errors print one
line on stderr: ``claif: ErrorType: message``. ``--json`` prints one JSON
document on stdout (``status --watch --json``: one per line).

argparse is the parser: it ships with Python and costs a few milliseconds to
import, which keeps `claif ping` quick.
"""

from __future__ import annotations

import sys

from .._sync import Client
from .._version import __version__
from ..errors import ClaifError, DaemonUnavailable
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError, _fail
from .completion_commands import _cmd_ask, _cmd_batch, _cmd_chat
from .daemon_commands import (
    _cmd_cache,
    _cmd_config,
    _cmd_env,
    _cmd_health,
    _cmd_keys,
    _cmd_log,
    _cmd_metrics,
    _cmd_models,
    _cmd_ping,
    _cmd_spend,
    _cmd_status,
    _cmd_token,
)
from .parser import _build_parser
from .session_commands import _cmd_session

__all__ = ["main", "_build_parser"]


_COMMANDS = {
    "ping": _cmd_ping, "status": _cmd_status, "ask": _cmd_ask, "batch": _cmd_batch,
    "cache": _cmd_cache, "config": _cmd_config, "session": _cmd_session, "chat": _cmd_chat,
    "health": _cmd_health, "metrics": _cmd_metrics, "models": _cmd_models, "log": _cmd_log, "keys": _cmd_keys,
    "token": _cmd_token, "env": _cmd_env, "spend": _cmd_spend,
}

# Options of `claif` itself, accepted after the subcommand too (`claif ask hi --json`).
_GLOBAL_FLAGS = frozenset({"--json"})

_GLOBAL_VALUED = frozenset({"--socket", "--timeout"})

def _hoist_globals(argv: list[str]) -> list[str]:
    """Move global options found after the subcommand to the front (up to a `--`)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i:i + 2])
            i += 1
        elif arg.split("=", 1)[0] in _GLOBAL_VALUED and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest

def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    raw = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(_hoist_globals(raw))
    except UsageError as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)
    args.argv = raw
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "concurrency", None) is not None and args.concurrency < 1:
        return _fail("UsageError", "--concurrency must be at least 1", EXIT_USAGE)
    timeout = args.timeout if args.timeout is not None else 600.0
    try:
        with Client(args.socket, timeout=timeout, client_name=f"claif-cli/{__version__}") as client:
            return _COMMANDS[args.command](client, args)
    except UsageError as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)
    except DaemonUnavailable as exc:
        return _fail(type(exc).__name__, str(exc), EXIT_UNAVAILABLE)
    except ClaifError as exc:
        return _fail(type(exc).__name__, str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`claif ask ... | head`): not an error worth a trace.
        return 0
    except (TypeError, ValueError) as exc:
        return _fail("UsageError", str(exc), EXIT_USAGE)


if __name__ == "__main__":
    raise SystemExit(main())
