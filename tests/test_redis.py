"""Redis as the shared backend (`cache.backend: redis`): two daemons on one
real redis-server (started here on a Unix socket in a temp dir; `make test`
installs it with apt as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claif_client import ClaifError, Client, NotFound, StorageError

from .conftest import DaemonProcess, Sim, eventually, sim_env

MODEL = "openai/gpt-4o-mini"
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None and os.geteuid() != 0,
                                reason="redis-server is not installed (make test installs it as root)")


class RedisServer:
    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.dir = directory
        self.appendonly = appendonly
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS is not None, "redis-server is missing: make test installs it with apt as root"
        self.proc = subprocess.Popen(
            [REDIS, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        self.socket.unlink(missing_ok=True)


def wait_for_ports(ports: list[int], what: str) -> None:
    """Until each loopback TCP port accepts a connection (10 s at most)."""
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{what} did not start"
                time.sleep(0.05)


@pytest.fixture
def redis_server(short_tmp: Path) -> Iterator[RedisServer]:
    directory = short_tmp / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()


def daemons_on(daemon_factory, sim: Sim, url: str, short_tmp: Path,  # type: ignore[no-untyped-def]
               **env: str) -> list[DaemonProcess]:
    """Two daemons (sockets a.sock and b.sock) on the Redis at `url`, with `env` on top."""
    daemons = []
    for name in ("a", "b"):
        d = daemon_factory(env=sim_env(sim, CLAIF_REDIS__URL=url, **env), start=False)
        d.socket = short_tmp / "run" / f"{name}.sock"
        d.start()
        daemons.append(d)
    return daemons


def two_daemons(daemon_factory, sim: Sim, redis: RedisServer, short_tmp: Path) -> list[DaemonProcess]:  # type: ignore[no-untyped-def]
    return daemons_on(daemon_factory, sim, redis.url, short_tmp, CLAIF_CACHE__BACKEND="redis",
                      CLAIF_REDIS__NEAR_CACHE_TTL="30")


def test_an_answer_made_on_one_daemon_is_a_hit_on_the_other(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                                             short_tmp: Path) -> None:
    a, b = two_daemons(daemon_factory, sim, redis_server, short_tmp)
    with Client(a.socket) as ca, Client(b.socket) as cb:
        first = ca.complete("What is shared?", model=MODEL)
        assert first.cached is False
        hit = cb.complete("What is shared?", model=MODEL)
        assert hit.cached == "exact" and hit.text == first.text
        streamed = "".join(cb.stream("What is shared?", model=MODEL))
        assert streamed == first.text
        assert sim.stats()["requests"] == 1

        # A delete on A reaches B's near cache (pub/sub): B asks upstream again.
        assert first.cache_key is not None and ca.cache_delete(first.cache_key)
        deadline = time.monotonic() + 5
        while cb.complete("What is shared?", model=MODEL, cache={"mode": "use"}).cached and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.stats()["requests"] == 2

        # A clear of a namespace on B empties it on A too.
        ca.complete("Team question", model=MODEL, cache={"namespace": "team"})
        assert cb.complete("Team question", model=MODEL, cache={"namespace": "team"}).cached == "exact"
        assert cb.cache_clear("team") >= 1
        time.sleep(0.2)
        assert ca.complete("Team question", model=MODEL, cache={"namespace": "team"}).cached is False
        stats = cb.cache_stats()
        assert stats["backend"] == "redis" and stats["shared"]["errors"] == 0 and stats["disk"] is None
    assert a.stop() == 0 and b.stop() == 0


def test_redis_down_keeps_serving_and_recovers(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                               short_tmp: Path) -> None:
    a, b = two_daemons(daemon_factory, sim, redis_server, short_tmp)
    with Client(a.socket) as ca, Client(b.socket) as cb:
        ca.complete("before the outage", model=MODEL)
        redis_server.stop()
        during = ca.complete("during the outage", model=MODEL)
        assert during.cached is False and during.text.endswith("during the outage")
        assert cb.complete("during the outage", model=MODEL).cached is False  # not shared: Redis was down
        assert ca.cache_stats()["shared"]["errors"] >= 1
        deadline = time.monotonic() + 10
        while ca.health()["status"] == "healthy" and time.monotonic() < deadline:
            time.sleep(0.1)
        checks = {c["name"]: c for c in ca.health()["checks"]}
        assert checks["cache_disk"]["status"] != "ok" and "redis" in checks["cache_disk"]["detail"]

        redis_server.start()
        ca.complete("after the outage", model=MODEL)
        assert cb.complete("after the outage", model=MODEL).cached == "exact"
        assert ca.cache_stats()["shared"]["error"] is None
    assert a.stop() == 0 and b.stop() == 0


def test_identical_requests_on_two_daemons_make_one_upstream_call(daemon_factory, sim: Sim,  # type: ignore[no-untyped-def]
                                                                  redis_server: RedisServer, short_tmp: Path) -> None:
    import threading

    a, b = two_daemons(daemon_factory, sim, redis_server, short_tmp)
    sim.configure(latency_ms=400)
    answers: dict[str, object] = {}

    def ask(name: str, d: DaemonProcess, stream: bool) -> None:
        with Client(d.socket) as c:
            if stream:
                answers[name] = "".join(c.stream("One call for all", model=MODEL))
            else:
                answers[name] = c.complete("One call for all", model=MODEL).text

    threads = [threading.Thread(target=ask, args=(f"{d.socket.stem}{i}", d, i % 2 == 1))
               for d in (a, b) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(answers.values())) == 1 and len(answers) == 6
    assert sim.stats()["requests"] == 1
    with Client(a.socket) as ca, Client(b.socket) as cb:
        across = ca.cache_stats()["shared"]["coalesced_across_daemons"] + \
            cb.cache_stats()["shared"]["coalesced_across_daemons"]
    assert across == 1  # one daemon flew it; the other's flight waited for its answer
    assert a.stop() == 0 and b.stop() == 0


def test_a_crashed_leader_holds_the_others_only_until_its_lease_expires(daemon_factory, sim: Sim,  # type: ignore[no-untyped-def]
                                                                        redis_server: RedisServer,
                                                                        short_tmp: Path) -> None:
    import signal
    import threading

    a, b = two_daemons(daemon_factory, sim, redis_server, short_tmp)
    for d in (a, b):
        with Client(d.socket) as c:
            c.config_set("redis.lock_ttl", 1.0)
    sim.configure(hold=True)

    def doomed() -> None:
        with pytest.raises(ClaifError):  # its daemon is killed under it
            Client(a.socket).complete("left hanging", model=MODEL)

    threading.Thread(target=doomed, daemon=True).start()
    sim.wait_for(lambda s: s["held"] == 1)
    a.signal(signal.SIGKILL)  # the leader dies holding the lease
    assert a.proc is not None
    a.proc.wait(10)
    sim.configure(hold=False)
    t0 = time.monotonic()
    with Client(b.socket) as cb:
        r = cb.complete("left hanging", model=MODEL)
    assert r.text == "Simulated reply to: left hanging" and time.monotonic() - t0 < 5
    assert b.stop() == 0


def test_a_semantic_hit_across_daemons(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                       short_tmp: Path) -> None:
    a, b = two_daemons(daemon_factory, sim, redis_server, short_tmp)
    with Client(a.socket) as ca, Client(b.socket) as cb:
        for c in (ca, cb):
            c.config_set("cache.semantic.enabled", True)
        first = ca.complete("What is the capital of France?", model=MODEL)
        deadline = time.monotonic() + 5
        while cb.cache_stats()["semantic"]["indexed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # B's index learns of A's answer through Redis
        hit = cb.complete("what is the capital of france", model=MODEL)
        assert hit.cached == "semantic" and hit.text == first.text
    assert a.stop() == 0 and b.stop() == 0
    b.start()  # a restart loads the shared vectors
    with Client(b.socket) as cb:
        cb.config_set("cache.semantic.enabled", True)
        r = cb.complete("What is the capital of France", model=MODEL)
        s = cb.cache_stats()["semantic"]
        assert r.cached == "semantic", {k: s[k] for k in ("lookups", "hits", "below_threshold", "stale", "indexed", "rejected_by_guard")}
    assert b.stop() == 0


def session_daemons(daemon_factory, sim: Sim, redis: RedisServer, short_tmp: Path) -> list[DaemonProcess]:  # type: ignore[no-untyped-def]
    return daemons_on(daemon_factory, sim, redis.url, short_tmp, CLAIF_SESSION__BACKEND="redis")


def test_a_session_follows_its_person_between_daemons(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                                       short_tmp: Path) -> None:
    import threading

    a, b = session_daemons(daemon_factory, sim, redis_server, short_tmp)
    with Client(a.socket) as ca, Client(b.socket) as cb:
        sid = ca.session_create(title="roaming", model=MODEL)["id"]
        ca.session_send(sid, "first on A")
        _, info = cb.session_send(sid, "then on B")
        assert info["message_index"] == 3
        # A's memory copy is validated: it sees B's turn at once, in its place.
        assert [m["content"] for m in ca.session_get(sid)["messages"]] == [
            "first on A", "Simulated reply to: first on A", "then on B", "Simulated reply to: then on B"]
        assert sim.requests()[-1]["body"]["messages"][0]["content"] == "first on A"  # type: ignore[index]

        def send(c: Client, text: str) -> None:
            c.session_send(sid, text)

        threads = [threading.Thread(target=send, args=(c, f"{name} {i}"))
                   for i in range(5) for name, c in (("a", Client(a.socket)), ("b", Client(b.socket)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        messages = [m["content"] for m in cb.session_get(sid)["messages"]]
        assert len(messages) == 4 + 20  # nothing lost
        for i in range(4, 24, 2):  # one order, each question followed by its own answer
            assert messages[i + 1] == f"Simulated reply to: {messages[i]}"
        assert messages == [m["content"] for m in ca.session_get(sid)["messages"]]
        listed = ca.session_list()
        assert listed["total"] == 1 and listed["sessions"][0]["message_count"] == 24
        cb.session_delete(sid)
        with pytest.raises(NotFound):
            ca.session_get(sid)
    assert a.stop() == 0 and b.stop() == 0


def test_sessions_when_redis_is_down_fail_clearly_and_lose_nothing_acknowledged(
        daemon_factory, sim: Sim, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    directory = short_tmp / "redis-aof"
    directory.mkdir()
    redis = RedisServer(directory, appendonly=True)
    redis.start()
    try:
        (a,) = session_daemons(daemon_factory, sim, redis, short_tmp)[:1]
        with Client(a.socket) as ca:
            sid = ca.session_create(model=MODEL)["id"]
            ca.session_send(sid, "kept")
            redis.stop()
            with pytest.raises(StorageError):
                ca.session_send(sid, "not acknowledged")
            assert ca.complete("the rest still works", model=MODEL).text.endswith("works")
            redis.start()
            assert [m["content"] for m in ca.session_get(sid)["messages"]] == ["kept", "Simulated reply to: kept"]
            ca.session_send(sid, "again")
            assert len(ca.session_get(sid)["messages"]) == 4
    finally:
        redis.stop()


def test_switching_the_cache_backend_at_run_time(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                                 short_tmp: Path) -> None:
    a = daemon_factory(env=sim_env(sim, CLAIF_REDIS__URL=redis_server.url), start=False)
    a.socket = short_tmp / "run" / "a.sock"
    a.start()
    with Client(a.socket) as ca:
        assert ca.cache_stats()["backend"] == "local"
        ca.config_set("cache.backend", "redis")
        deadline = time.monotonic() + 5
        while ca.cache_stats()["backend"] != "redis" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ca.cache_stats()["shared"] is not None
        ca.complete("asked after the switch", model=MODEL)
        ca.config_set("cache.backend", "local")
        while ca.cache_stats()["backend"] != "local" and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert ca.cache_stats()["disk"] is not None
    other = daemon_factory(env=sim_env(sim, CLAIF_CACHE__BACKEND="redis", CLAIF_REDIS__URL=redis_server.url),
                           start=False)
    other.socket = short_tmp / "run" / "o.sock"
    other.start()
    with Client(other.socket) as co:  # what A stored while on Redis is there for everyone
        assert co.complete("asked after the switch", model=MODEL).cached == "exact"
    assert a.stop() == 0 and other.stop() == 0


def test_through_sentinel(daemon_factory, sim: Sim, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """A master and a sentinel watching it (both real redis-server processes): the daemon finds
    the master through the sentinel."""
    import json

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    assert REDIS is not None
    directory = short_tmp / "sentinel"
    directory.mkdir()
    master_port, sentinel_port = free_port(), free_port()
    conf = directory / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {directory}\n"
                    f"sentinel monitor team 127.0.0.1 {master_port} 1\n")
    procs = [subprocess.Popen([REDIS, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
                               "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([REDIS, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for_ports([master_port, sentinel_port], "redis or its sentinel")
        d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__BACKEND="redis", CLAIF_SESSION__BACKEND="redis"),
                           start=False)
        (d.home / ".claif").mkdir(exist_ok=True)
        (d.home / ".claif" / "config.json").write_text(json.dumps(
            {"redis": {"sentinels": [f"127.0.0.1:{sentinel_port}"], "service_name": "team"}}))
        d.start()
        with Client(d.socket) as c:
            first = c.complete("through the sentinel", model=MODEL)
            assert c.complete("through the sentinel", model=MODEL).cached == "exact"
            stats = c.cache_stats()["shared"]
            assert stats["errors"] == 0 and stats["url"].startswith("sentinel team via 127.0.0.1:")
            sid = c.session_create(model=MODEL)["id"]
            c.session_send(sid, "kept in the master")
        import redis as redis_py

        keys = redis_py.Redis(port=master_port).keys("claif:*")
        assert any(first.cache_key and first.cache_key.encode() in k for k in keys)
        assert any(sid.encode() in k for k in keys)
        assert d.stop() == 0
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_switching_the_session_backend_at_run_time(daemon_factory, sim: Sim, redis_server: RedisServer,  # type: ignore[no-untyped-def]
                                                   short_tmp: Path) -> None:
    d = daemon_factory(env=sim_env(sim, CLAIF_REDIS__URL=redis_server.url))
    with Client(d.socket) as c:
        local_id = c.session_create(title="on disk")["id"]

        def wait_backend(name: str) -> None:
            deadline = time.monotonic() + 5
            while c.status()["sessions"]["backend"] != name and time.monotonic() < deadline:
                time.sleep(0.05)

        c.config_set("session.backend", "redis")
        wait_backend("redis")
        shared_id = c.session_create(title="in redis")["id"]
        assert [s["id"] for s in c.session_list()["sessions"]] == [shared_id]
        c.config_set("session.backend", "local")
        wait_backend("local")
        assert [s["id"] for s in c.session_list()["sessions"]] == [local_id]
    assert d.stop() == 0


def test_on_a_redis_cluster(daemon_factory, sim: Sim, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """Three real cluster nodes (redis-cli --cluster create): two daemons share hits, a session
    and invalidations through it."""

    def free_port() -> int:
        """A free port P with P + 10000 (the cluster bus) free too: below the ephemeral range."""
        import random

        while True:
            port = random.randrange(20000, 30000)
            try:
                for p in (port, port + 10000):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", p))
                return port
            except OSError:
                continue

    cli = shutil.which("redis-cli")
    assert REDIS is not None and cli is not None
    directory = short_tmp / "cluster"
    directory.mkdir()
    ports = [free_port() for _ in range(3)]
    procs = []
    for port in ports:
        node = directory / str(port)
        node.mkdir()
        procs.append(subprocess.Popen(
            [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file",
             str(node / "nodes.conf"), "--save", "", "--appendonly", "no", "--dir", str(node)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_for_ports(ports, "a cluster node")
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while "cluster_state:ok" not in subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"],
                                                       capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        a, b = daemons_on(daemon_factory, sim, f"redis://127.0.0.1:{ports[0]}", short_tmp,
                          CLAIF_CACHE__BACKEND="redis", CLAIF_SESSION__BACKEND="redis", CLAIF_REDIS__CLUSTER="true")
        with Client(a.socket) as ca, Client(b.socket) as cb:
            answers = [ca.complete(f"cluster question {i}", model=MODEL) for i in range(6)]  # keys on every node
            for i, first in enumerate(answers):
                r = cb.complete(f"cluster question {i}", model=MODEL)
                assert r.cached == "exact", (ca.cache_stats()["shared"], cb.cache_stats()["shared"],
                                             [x for x in a.logs() if x.get("level") != "info"][-3:])
            assert answers[0].cache_key is not None and ca.cache_delete(answers[0].cache_key), (
                ca.cache_stats()["shared"], [x for x in a.logs() if x.get("level") != "info"][-3:])
            deadline = time.monotonic() + 5
            while cb.complete("cluster question 0", model=MODEL).cached and time.monotonic() < deadline:
                time.sleep(0.05)  # B heard of the delete through the cluster's pub/sub
            assert sim.stats()["requests"] == 7, (cb.cache_stats()["shared"], [x for x in b.logs() if x.get("level") != "info"][-3:])
            sid = ca.session_create(model=MODEL)["id"]
            ca.session_send(sid, "on A")
            cb.session_send(sid, "on B")
            assert len(ca.session_get(sid)["messages"]) == 4
            assert ca.session_list()["total"] == 1
            assert cb.cache_clear() >= 5
            assert ca.cache_stats()["shared"]["errors"] == 0 and cb.cache_stats()["shared"]["errors"] == 0, [
                (x.get("during"), x.get("error")) for d in (a, b) for x in d.logs() if x.get("during")]
        assert a.stop() == 0 and b.stop() == 0
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_sessions_on_a_redis_without_persistence_are_a_warning(daemon_factory, sim: Sim,  # type: ignore[no-untyped-def]
                                                               redis_server: RedisServer, short_tmp: Path) -> None:
    import redis

    a, b = daemons_on(daemon_factory, sim, redis_server.url, short_tmp, CLAIF_SESSION__BACKEND="redis",
                      CLAIF_HEALTH__INTERVAL="0.2")
    assert b.stop() == 0

    def sessions_check(c: Client) -> dict[str, Any]:
        return next(x for x in c.health()["checks"] if x["name"] == "sessions")

    with Client(a.socket) as c:
        check = eventually(lambda: (x := sessions_check(c))["status"] == "warning" and x)
        assert check and "appendonly" in check["detail"] and "lost" in check["detail"]
        admin = redis.Redis(unix_socket_path=str(redis_server.socket))
        admin.config_set("appendonly", "yes")
        admin.config_set("appendfsync", "no")
        check = eventually(lambda: "appendfsync" in (x := sessions_check(c))["detail"] and x)
        assert check and check["status"] == "warning"
        admin.config_set("appendfsync", "everysec")
        assert eventually(lambda: sessions_check(c)["status"] == "ok")
        admin.close()
    assert a.stop() == 0
