"""The performance and health monitors against the real daemon: `claif
health`, `claif metrics`, the HTTP endpoint and `claif status --watch`."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from claif_client import Client, UpstreamError

from .conftest import DaemonProcess, Sim, eventually, sim_env, start_sim
from .test_cli import CLAIF, claif

BASE_CHECKS = {"config", "draining", "cache_disk", "sessions", "disk_space", "memory", "file_descriptors", "semantic_cache",
               "listeners", "spend"}


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["name"] == name)


# ------------------------------------------------------------------ health


def test_health_is_healthy_then_warns_on_a_rejected_config(daemon: DaemonProcess) -> None:
    out = claif("health", socket=daemon.socket)
    assert out.returncode == 0 and out.stdout.startswith("healthy")
    doc = json.loads(claif("--json", "health", socket=daemon.socket).stdout)
    assert doc["status"] == "healthy"
    assert {c["name"] for c in doc["checks"]} == BASE_CHECKS
    for c in doc["checks"]:
        assert c["checked_at"] > time.time() - 60
    assert check(doc, "sessions")["latency_ms"] is not None  # a probe that ran, with its time
    (daemon.home / ".claif.json").write_text("{ broken")
    with Client(daemon.socket) as c:
        c.config_reload()
        assert c.health()["status"] == "warning"
    out = claif("health", socket=daemon.socket)
    assert out.returncode == 1 and "config" in out.stdout and "rejected" in out.stdout


def test_two_health_calls_agree_and_reset_nothing(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        sim.configure(errors=[500] * 40)
        for i in range(4):
            with pytest.raises(UpstreamError):
                c.complete(f"x{i}", model="openai/m")
        first, second = c.health(), c.health()
    strip = [{k: v for k, v in x.items() if k != "checked_at"} for x in first["checks"]]
    assert strip == [{k: v for k, v in x.items() if k != "checked_at"} for x in second["checks"]]
    assert first["status"] == second["status"] == "unhealthy"


def test_every_call_failing_after_retries_is_unhealthy(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    # (The circuit breaker would open after 5 failures and say unhealthy on its
    # own: held closed here, the failure window's rule is what is checked.)
    d = daemon_factory(env=sim_env(sim, CLAIF_RETRY__MAX_ATTEMPTS="3", CLAIF_PROVIDERS__OPENAI__CIRCUIT_FAILURES="100"))
    with Client(d.socket) as c:
        assert c.health()["status"] == "healthy"
        sim.configure(errors=[500] * 30)
        for i in range(4):
            with pytest.raises(UpstreamError):
                c.complete(f"x{i}", model="openai/m")
        doc = c.health()
    assert doc["status"] == "unhealthy"
    provider = check(doc, "provider:openai")
    assert provider["status"] == "unhealthy" and "4 of 4 calls failed" in provider["detail"]
    assert claif("health", socket=d.socket).returncode == 2
    assert d.stop() == 0


def test_half_the_calls_failing_is_a_warning(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_RETRY__MAX_ATTEMPTS="1"))
    with Client(d.socket) as c:
        for i in range(6):
            if i % 2:
                sim.configure(errors=[500])
                with pytest.raises(UpstreamError):
                    c.complete(f"y{i}", model="openai/m")
            else:
                c.complete(f"y{i}", model="openai/m")
        sim.configure(errors=[500])
        with pytest.raises(UpstreamError):
            c.complete("y-last", model="openai/m")
        doc = c.health()
    assert check(doc, "provider:openai")["status"] == "warning", doc
    assert d.stop() == 0


def test_a_stopped_upstream_makes_its_provider_unhealthy(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    own = start_sim()
    try:
        d = daemon_factory(env=sim_env(own, CLAIF_HEALTH__INTERVAL="0.2", CLAIF_HEALTH__TIMEOUT="2"))
        with Client(d.socket) as c:
            doc = c.health()
            assert check(doc, "provider:anthropic")["status"] == "ok", doc
            assert check(doc, "provider:openai")["latency_ms"] > 0
            own.proc.kill()
            own.proc.wait()
            assert eventually(lambda: c.health()["status"] == "unhealthy", timeout=10)
            doc = c.health()
        assert check(doc, "provider:anthropic")["status"] == "unhealthy"
        assert "cannot reach" in check(doc, "provider:anthropic")["detail"]
        assert claif("health", socket=d.socket).returncode == 2
        assert d.stop() == 0
    finally:
        own.proc.kill()


@pytest.mark.parametrize(("key", "expected"), [("CLAIF_HEALTH__DISK_WARNING_FREE", "warning"),
                                               ("CLAIF_HEALTH__DISK_CRITICAL_FREE", "unhealthy")])
def test_an_absurd_disk_threshold_is_reported(daemon_factory, key: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={key: "1000TB"})
    with Client(d.socket) as c:
        doc = c.health()
    disk = check(doc, "disk_space")
    assert disk["status"] == expected and "GB free" in disk["detail"]
    assert doc["status"] == expected


def test_memory_thresholds_are_reported(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_HEALTH__MEMORY_WARNING_AVAILABLE": "1000TB"})
    with Client(d.socket) as c:
        assert check(c.health(), "memory")["status"] == "warning"
    assert d.stop() == 0  # the factory's daemons share one socket path
    d2 = daemon_factory(env={"CLAIF_HEALTH__RSS_HEADROOM": "0", "CLAIF_CACHE__MEMORY_MAX_BYTES": "0",
                             "CLAIF_SESSION__MEMORY_BUDGET": "0"})
    with Client(d2.socket) as c:
        memory = check(c.health(), "memory")
    assert memory["status"] == "warning" and "RSS" in memory["detail"]


def test_unreachable_daemon_health_exit_code(short_tmp) -> None:  # type: ignore[no-untyped-def]
    assert claif("health", socket=short_tmp / "none.sock").returncode == 3


# ------------------------------------------------------------------ metrics


def test_metrics_after_scripted_traffic(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("q", model="openai/m")            # miss, upstream ok
        c.complete("q", model="openai/m")            # memory hit
        list(c.stream("streamed", model="anthropic/m"))
        sim.configure(errors=[429])                   # one retry, then ok
        c.complete("retried", model="anthropic/m")
        sim.configure(errors=[400])
        with pytest.raises(UpstreamError):
            c.complete("refused", model="openai/m")
        sim.configure(latency_ms=300)
        import threading

        coalesced = [threading.Thread(target=lambda: Client(upstream_daemon.socket).complete(
            "together", model="openai/m")) for _ in range(3)]
        for t in coalesced:
            t.start()
        for t in coalesced:
            t.join()
        s = c.session_create()
        c.session_send(s["id"], "hello", model="echo/x")
    out = claif("metrics", socket=upstream_daemon.socket)
    assert out.returncode == 0
    samples = samples_of(out.stdout)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("claif_requests_total", method="complete", provider="openai", model="m", front="socket", outcome="ok") == 2
    assert value("claif_requests_total", method="complete", provider="openai", model="m", front="socket",
                 outcome="cached-exact") == 1
    assert value("claif_requests_total", method="complete", provider="openai", model="m", front="socket", outcome="coalesced") == 2
    assert value("claif_requests_total", method="complete", provider="openai", model="m", front="socket",
                 outcome="upstream_error") == 1
    assert value("claif_upstream_attempts_total", provider="anthropic", status="429") == 1
    assert value("claif_upstream_attempts_total", provider="anthropic", status="200") == 2
    assert value("claif_upstream_retries_total", provider="anthropic") == 1
    assert value("claif_request_duration_seconds_count", method="complete", provider="openai", model="m", front="socket") == 6
    assert value("claif_request_duration_seconds_bucket", method="complete", provider="openai", model="m", front="socket",
                 le="+Inf") == 6
    assert value("claif_upstream_duration_seconds_count", provider="anthropic", model="m") == 2
    assert value("claif_time_to_first_token_seconds_count", provider="anthropic", model="m") == 1
    assert value("claif_tokens_total", provider="openai", model="m", direction="output") > 0
    assert value("claif_cache_hits_total", tier="memory") == 1
    assert value("claif_cache_coalesced_total") == 2
    assert value("claif_build_info", version="0.1.0", python=sys.version.split()[0]) == 1
    assert value("process_resident_memory_bytes") > 0
    assert value("claif_sessions") == 1
    assert ("claif_provider_in_flight", (("provider", "openai"),)) in samples
    # The same figures, for people.
    with Client(upstream_daemon.socket) as c:
        perf = c.status()["performance"]
    assert perf["requests_per_s"]["1m"] > 0 and perf["latency_ms"]["p50"] is not None
    assert perf["by_model"]["openai/m"]["output_tokens"] > 0
    assert perf["last_errors"][-1]["code"] == "upstream_error"


def test_cost_uses_the_price_table_with_dated_ids(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim))
    with Client(d.socket) as c:
        c.complete("price me", model="anthropic/claude-3-5-sonnet-20241022")
        samples = samples_of(c.metrics())
    cost = samples[("claif_cost_usd_total", (("model", "claude-3-5-sonnet-20241022"), ("provider", "anthropic")))]
    assert cost > 0


def test_metrics_recording_can_be_turned_off(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_METRICS__ENABLED": "false"})
    with Client(d.socket) as c:
        c.complete("a")
        assert not any(k[0] == "claif_requests_total" for k in samples_of(c.metrics()))
        c.config_set("metrics.enabled", True)
        c.complete("a")
        assert samples_of(c.metrics())[("claif_requests_total", (("front", "socket"), ("method", "complete"),
                                                                  ("model", "default"), ("outcome", "cached-exact"),
                                                                  ("provider", "echo")))] == 1


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["content-type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def test_the_http_endpoint_serves_metrics_and_health(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"CLAIF_METRICS__LISTEN": "127.0.0.1:0"})
    with Client(d.socket) as c:
        c.complete("over http")
        address = c.status()["metrics_listen"]
        assert address.startswith("127.0.0.1:")
        status, ctype, text = _get(f"http://{address}/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert any(name == "claif_requests_total" for name, _ in samples_of(text))
        status, ctype, body = _get(f"http://{address}/health")
        assert status == 200 and json.loads(body)["status"] == "healthy"
        assert _get(f"http://{address}/nothing")[0] == 404
        # Unhealthy is 503, for load balancers.
        c.config_set("health.disk_critical_free", "1000TB")
        c.config_set("health.interval", 0.1)
        assert eventually(lambda: _get(f"http://{address}/health")[0] == 503, timeout=5)
        # Moved at run time: the old address closes, the new one serves.
        c.config_set("metrics.listen", "127.0.0.1:0")  # unchanged text: same listener
        assert c.status()["metrics_listen"] == address
        c.config_set("metrics.listen", "")
        assert c.status()["metrics_listen"] is None
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{address}/metrics", timeout=2)
        c.config_set("metrics.listen", "127.0.0.1:0")
        moved = eventually(lambda: c.status()["metrics_listen"])
        assert moved and _get(f"http://{moved}/metrics")[0] == 200


# ------------------------------------------------------------------ watch


def test_status_watch_renders_under_a_pseudo_terminal(daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as c:
        c.complete("something to show")
    # claif on a terminal, started by subprocess (no Python runs between fork
    # and exec: a fork of this multi-threaded test process could hang there).
    fd, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIF_")}
    env.update(COLUMNS="120", LINES="40", TERM="xterm")
    # A program started with SIGINT ignored (as a shell's background job is)
    # keeps it ignored, and Python then installs no Ctrl-C handler: give claif
    # the terminal's default, whoever started this test.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([CLAIF, "--socket", str(daemon.socket), "status", "--watch", "--interval", "0.2"],
                                stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    os.close(terminal)
    out = b""

    def read_while(going: Callable[[bytes], bool], seconds: float = 15) -> bytes:
        got = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and going(got):
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child's side of the terminal is closed
                    break
                if not data:
                    break
                got += data
        return got

    try:
        out += read_while(lambda got: got.count(b"requests/s") < 3)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it
        # A terminal keeps reading while the program exits: rich's last frame
        # must not block on a full pty (it hung there when the test stopped reading).
        out += read_while(lambda got: True)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"claif status --watch did not end on Ctrl-C: {out[-2000:]!r}") from None
        finally:
            os.close(fd)
    text = out.decode(errors="replace")
    assert text.count("requests/s") >= 3, text[-2000:]
    for label in ("health", "latency", "in flight", "hit rate", "memory", "sessions"):
        assert label in text
    assert code == 0


def test_status_watch_json_lines(daemon: DaemonProcess) -> None:
    proc = subprocess.Popen([CLAIF, "--socket", str(daemon.socket), "--json", "status", "--watch", "--interval",
                             "0.1"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    proc.terminate()
    proc.wait(timeout=10)
    assert all("performance" in doc for doc in lines)
