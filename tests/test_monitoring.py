"""`claif health` and `claif metrics` against the real daemon."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from claif_client import Client, UpstreamError

from .conftest import DaemonProcess, Sim, sim_env
from .test_cli import claif


def test_health_is_healthy_then_warns_on_a_rejected_config(daemon: DaemonProcess) -> None:
    out = claif("health", socket=daemon.socket)
    assert out.returncode == 0 and out.stdout.startswith("healthy")
    doc = json.loads(claif("--json", "health", socket=daemon.socket).stdout)
    assert doc["status"] == "healthy"
    assert {c["name"] for c in doc["checks"]} == {"config", "draining", "cache_disk", "sessions", "upstream"}
    (daemon.home / ".claif.json").write_text("{ broken")
    with Client(daemon.socket) as c:
        c.config_reload()
        assert c.health()["status"] == "warning"
    out = claif("health", socket=daemon.socket)
    assert out.returncode == 1 and "config" in out.stdout and "rejected" in out.stdout


def test_health_warns_on_failing_upstream(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_RETRY__MAX_ATTEMPTS="1"))
    with Client(d.socket) as c:
        c.health()  # start the window
        sim.configure(errors=[500] * 12)
        for i in range(12):
            with pytest.raises(UpstreamError):
                c.complete(f"x{i}", model="openai/m")
        doc = c.health()
    assert doc["status"] == "warning"
    assert next(x for x in doc["checks"] if x["name"] == "upstream")["status"] == "warning"
    assert d.stop() == 0


def test_unreachable_daemon_health_exit_code(short_tmp) -> None:  # type: ignore[no-untyped-def]
    assert claif("health", socket=short_tmp / "none.sock").returncode == 3


def test_metrics_exposition_parses_and_counts(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("q", model="openai/m")
        c.complete("q", model="openai/m")
        s = c.session_create()
        c.session_send(s["id"], "hello", model="echo/x")
    out = claif("metrics", socket=upstream_daemon.socket)
    assert out.returncode == 0
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(out.stdout)
        for sample in family.samples
    }
    assert samples[("claif_cache_hits_total", (("tier", "memory"),))] == 1
    assert samples[("claif_cache_misses_total", ())] >= 2
    assert samples[("claif_upstream_requests_total", ())] >= 1
    assert samples[("claif_sessions", ())] == 1
    assert samples[("claif_config_generation", ())] >= 1
    assert ("claif_provider_in_flight", (("provider", "openai"),)) in samples
