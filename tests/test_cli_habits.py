"""The CLI people already know (issue 32): real `claif` processes against a
real daemon."""

from __future__ import annotations

import json

from claif_client import Client

from .conftest import DaemonProcess
from .test_cli import claif


def test_unknown_environment_names_are_warned_with_a_suggestion(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory(env={"CLAIF_API_KEY": "sk-x", "CLAIF_POOL_MAX_CONNECTIONS": "33",
                                           "CLAIF_SOCKT": "/tmp/x", "CLAIF_DEFAULT_MODEL": "echo/m"})
    with Client(d.socket) as c:
        warnings = c.status()["config"]["warnings"]
        assert c.config_get("pool.max_connections")["value"] == 100  # (not read)
    assert any("$CLAIF_API_KEY is not read" in w and "claif keys set" in w for w in warnings)
    assert any("$CLAIF_POOL_MAX_CONNECTIONS" in w and "$CLAIF_POOL__MAX_CONNECTIONS" in w for w in warnings)
    assert any("$CLAIF_SOCKT" in w and "did you mean $CLAIF_SOCKET?" in w for w in warnings)
    assert not any("CLAIF_DEFAULT_MODEL" in w for w in warnings)  # an alias that is read
    assert d.stop() == 0


def test_restart_only_keys_are_not_shown_as_applied(daemon: DaemonProcess) -> None:
    out = claif("config", "set", "cache.compression", "zstd", socket=daemon.socket)
    assert out.returncode == 1 and "read at start only" in out.stderr and "--scope global" in out.stderr
    assert "effective" not in out.stdout
    out = claif("config", "set", "cache.compression", "none", "--scope", "global", socket=daemon.socket)
    assert out.returncode == 0 and "not yet effective" in out.stdout and "restarts" in out.stdout
    daemon.stop()
    daemon.start()
    with Client(daemon.socket) as c:
        assert c.config_get("cache.compression")["value"] == "none"


def test_enum_errors_list_the_choices(daemon: DaemonProcess) -> None:
    out = claif("config", "set", "logging.level", "loud", socket=daemon.socket)
    assert out.returncode == 1 and "one of: debug, info, warning, error, critical" in out.stderr
    out = claif("--json", "config", "validate", "-", socket=daemon.socket, stdin=json.dumps(
        {"cache": {"compression": "lz4"}}))
    assert "one of: zlib, zstd, none" in out.stdout
