"""`claifd`: run the daemon, or `claifd install-user-units`."""

from __future__ import annotations

import argparse
import sys

from . import __version__

__all__ = ["main"]


def _daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="claifd",
        description="The claif daemon: pooled, cached access to LLM APIs over a Unix socket.",
        epilog="Subcommand: `claifd install-user-units [--dry-run] [--exec-start PATH]` writes the systemd user units.",
    )
    p.add_argument("--socket", help="socket path (else $CLAIF_SOCKET, else $XDG_RUNTIME_DIR/claif/claifd.sock)")
    p.add_argument("--config", help="global config file (default ~/.claif/config.json)")
    p.add_argument("--project-config", help="project config file (default ./.claif.json)")
    p.add_argument("--log-format", choices=["json", "console"], help="default: console on a TTY, else json")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides logging.level")
    p.add_argument("--version", action="version", version=f"claifd {__version__}")
    return p


def _units_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="claifd install-user-units",
        description="Write the systemd user units for claifd (claifd.socket, claifd.service) and the 0600 key file.",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    p.add_argument("--exec-start", metavar="PATH",
                   help="the claifd to run (default: this one when installed outside a source checkout, else "
                        "a venv created under ~/.local/share/claifd)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install-user-units"]:
        from .units import install_user_units

        opts = _units_parser().parse_args(args[1:])
        return install_user_units(dry_run=opts.dry_run, exec_start=opts.exec_start)

    from .daemon import DaemonOptions, run

    ns = _daemon_parser().parse_args(args)
    return run(
        DaemonOptions(
            socket=ns.socket,
            config=ns.config,
            project_config=ns.project_config,
            log_format=ns.log_format,
            log_level=ns.log_level,
        )
    )
