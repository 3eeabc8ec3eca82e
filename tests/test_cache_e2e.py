"""The response cache through the real daemon, against the simulator."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import anyio
import pytest

from claif_client import AsyncClient, Client, NotFound, UpstreamError
from claif_client.protocol import Cancel, Complete, CompletionRequest, Error, Message
from claifd.cache.disk import FILENAME

from .conftest import DaemonProcess, RawConnection, Sim, eventually, sim_env

OPENAI = "openai/gpt-4o-mini"
ANTHROPIC = "anthropic/claude-sonnet-4-5"


def wait_disk(c: Client, entries: int, timeout: float = 10.0) -> dict:  # type: ignore[type-arg]
    """Until the write-behind has committed `entries` rows to the disk tier."""
    deadline = time.monotonic() + timeout
    while True:
        stats = c.cache_stats()
        disk = stats["disk"]
        if (disk["entries"] >= entries and disk["pending_writes"] == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_second_identical_request_is_a_hit(upstream_daemon: DaemonProcess, sim: Sim, model: str) -> None:
    with Client(upstream_daemon.socket) as c:
        first = c.complete("What is 2+2?", model=model, temperature=0.2)
        second = c.complete("What is 2+2?", model=model, temperature=0.2)
        assert first.cached is False and second.cached == "exact"
        assert second.text == first.text and second.usage == first.usage
        assert second.cache_key == first.cache_key and first.cache_key
        # Any output-affecting difference is a miss: 2+3, another temperature, another model.
        assert c.complete("What is 2+3?", model=model, temperature=0.2).cached is False
        assert c.complete("What is 2+2?", model=model, temperature=0.3).cached is False
        stats = c.cache_stats()
        status = c.status()["cache"]
    assert sim.stats()["requests"] == 3
    assert stats["hits"] == 1 and stats["misses"] == 3 and stats["stores"] == 3
    assert stats["saved"]["output_tokens"] == first.usage.output_tokens
    assert stats["saved"]["cost_usd"] > 0
    assert status["hits"] == 1 and status["misses"] == 3 and status["entries"] >= 1 and status["bytes"] > 0


def test_stream_recorded_and_replayed_with_its_chunk_boundaries(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    # Pieces of 3 characters cut words, and each event reaches the daemon in
    # two writes split inside a multi-byte character: a replay re-cut by
    # words, or a decoder that trusts write boundaries, would differ.
    sim.configure(chunk_chars=3)
    prompt = "tell me thrée things, 日本語 ok"
    text = "Simulated reply to: " + prompt
    expected = [text[i:i + 3] for i in range(0, len(text), 3)]
    with Client(upstream_daemon.socket) as c:
        live = c.stream(prompt, model=ANTHROPIC)
        live_chunks = list(live)
        replay = c.stream(prompt, model=ANTHROPIC)
        replay_chunks = list(replay)
        plain = c.complete(prompt, model=ANTHROPIC)
        wait_disk(c, 1)
    assert live_chunks == expected
    assert replay_chunks == expected
    assert live.response is not None and live.response.cached is False
    assert replay.response is not None and replay.response.cached == "exact"
    assert plain.cached == "exact" and plain.text == text
    # The disk tier keeps the boundaries too.
    assert upstream_daemon.stop() == 0
    upstream_daemon.start()
    with Client(upstream_daemon.socket) as c:
        again = c.stream(prompt, model=ANTHROPIC)
        assert list(again) == expected and again.response is not None and again.response.cached == "exact"
    assert sim.stats()["requests"] == 1


def test_plain_answer_replayed_as_a_stream(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        plain = c.complete("a plain answer please", model=OPENAI)
        stream = c.stream("a plain answer please", model=OPENAI)
        chunks = list(stream)
    assert len(chunks) > 1 and "".join(chunks) == plain.text
    assert stream.response is not None and stream.response.cached == "exact"
    assert sim.stats()["requests"] == 1


def test_errors_are_never_stored(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_RETRY__MAX_ATTEMPTS="1"))
    with Client(d.socket) as c:
        sim.configure(errors=[500])
        with pytest.raises(UpstreamError):
            c.complete("x", model=OPENAI)
        sim.configure(errors=[429])
        with pytest.raises(UpstreamError):
            c.complete("x", model=OPENAI)
        assert c.complete("x", model=OPENAI).cached is False
        assert c.cache_stats()["stores"] == 1
    assert sim.stats()["requests"] == 3
    assert d.stop() == 0


@pytest.mark.parametrize("fault", [{"stream_cut_after": 2}, {"stream_error_after": 2}])
def test_cut_off_streams_are_never_stored(upstream_daemon: DaemonProcess, sim: Sim, fault: dict[str, int]) -> None:
    with Client(upstream_daemon.socket) as c:
        sim.configure(**fault)
        with pytest.raises(UpstreamError):
            list(c.stream("one two three four", model=ANTHROPIC))
        sim.reset()
        assert c.cache_stats()["stores"] == 0
        stream = c.stream("one two three four", model=ANTHROPIC)
        assert "".join(stream) == "Simulated reply to: one two three four"
        assert stream.response is not None and stream.response.cached is False
    assert sim.stats()["requests"] == 1


def test_cancelled_stream_is_not_stored(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(token_delay_ms=30)
    with Client(upstream_daemon.socket) as c:
        stream = c.stream(" ".join(["w"] * 50), model=OPENAI)
        next(stream)
        stream.close()
        sim.wait_for(lambda s: s["in_flight"] == 0)
        assert c.cache_stats()["stores"] == 0
        assert c.complete(" ".join(["w"] * 50), model=OPENAI).cached is False


def test_fifty_concurrent_identical_requests_make_one_upstream_call(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(hold=True)  # the one upstream call waits until all 50 have joined it
    results: list[str] = []

    async def main() -> None:
        clients = [AsyncClient(upstream_daemon.socket) for _ in range(5)]

        async def one(i: int) -> None:
            c = clients[i % 5]
            if i % 2:
                results.append((await c.complete("coalesce me", model=OPENAI)).text)
            else:
                results.append("".join([d async for d in c.stream("coalesce me", model=OPENAI)]))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
            with anyio.fail_after(10):
                while (await clients[0].cache_stats())["coalesced"] < 49:
                    await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(release, sim)
        for c in clients:
            await c.aclose()

    anyio.run(main)
    assert results == ["Simulated reply to: coalesce me"] * 50
    assert sim.stats()["requests"] == 1
    with Client(upstream_daemon.socket) as c:
        stats = c.cache_stats()
    assert stats["coalesced"] == 49 and stats["stores"] == 1


def release(sim: Sim) -> None:
    sim.http.post("/_sim/release").raise_for_status()


def wait_coalesced(c: Client, n: int) -> None:
    assert eventually(lambda: c.cache_stats()["coalesced"] >= n), f"{n} followers never joined"


def test_stream_followers_get_every_chunk(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    # Followers join a stream in progress at chunks 2, 5 and 8: each gets the
    # chunks recorded so far, then the rest.
    sim.configure(token_delay_ms=20)
    text = " ".join(f"t{i}" for i in range(40))
    got: dict[int, list[str]] = {}

    def follow(i: int) -> None:
        with Client(upstream_daemon.socket) as c:
            got[i] = list(c.stream(text, model=ANTHROPIC))

    threads = []
    with Client(upstream_daemon.socket) as c, Client(upstream_daemon.socket) as watcher:
        leader = []
        for n, chunk in enumerate(c.stream(text, model=ANTHROPIC), 1):
            leader.append(chunk)
            if n in (2, 5, 8):
                threads.append(threading.Thread(target=follow, args=(n,)))
                threads[-1].start()
                wait_coalesced(watcher, len(threads))
    for t in threads:
        t.join()
    assert sim.stats()["requests"] == 1
    assert len(got) == 3 and all(chunks == leader for chunks in got.values())
    assert "".join(leader) == "Simulated reply to: " + text


def test_call_continues_for_followers_when_the_leader_leaves(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(hold=True)
    leader = RawConnection(upstream_daemon.socket)
    request = CompletionRequest(messages=[Message("user", "shared")], model=OPENAI)
    leader.send(Complete(id=1, request=request))
    sim.wait_for(lambda s: s["held"] == 1)
    follower_result: list[str] = []

    def follower() -> None:
        with Client(upstream_daemon.socket) as c:
            follower_result.append(c.complete("shared", model=OPENAI).text)

    t = threading.Thread(target=follower)
    t.start()
    with Client(upstream_daemon.socket) as c:
        wait_coalesced(c, 1)
    leader.send(Cancel(id=1))  # the leader gives up; the follower still wants the answer
    reply = leader.read()
    assert isinstance(reply, Error) and reply.code == "cancelled"
    leader.close()
    release(sim)
    t.join(timeout=10)
    assert follower_result == ["Simulated reply to: shared"]
    assert sim.stats()["requests"] == 1 and sim.stats()["disconnects"] == 0


def test_followers_get_the_leaders_error(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    sim.configure(hold=True, errors=[400])
    errors: list[str] = []

    def one() -> None:
        with Client(upstream_daemon.socket) as c:
            try:
                c.complete("doomed", model=OPENAI)
            except UpstreamError as exc:
                errors.append(exc.code)

    threads = [threading.Thread(target=one) for _ in range(5)]
    threads[0].start()
    sim.wait_for(lambda s: s["held"] == 1)
    for t in threads[1:]:
        t.start()
    with Client(upstream_daemon.socket) as c:
        wait_coalesced(c, 4)
    release(sim)
    for t in threads:
        t.join()
    assert errors == ["upstream_error"] * 5
    assert sim.stats()["requests"] == 1


def test_cache_modes(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        with pytest.raises(NotFound):
            c.complete("q", model=OPENAI, cache="only")
        assert sim.stats()["requests"] == 0, "'only' never reaches upstream"
        c.complete("q", model=OPENAI)
        assert c.complete("q", model=OPENAI, cache="only").cached == "exact"
        # bypass: neither read nor write.
        assert c.complete("q", model=OPENAI, cache=False).cached is False
        assert c.complete("b", model=OPENAI, cache="bypass").cached is False
        with pytest.raises(NotFound):
            c.complete("b", model=OPENAI, cache="only")
        # refresh: skips the lookup, stores the new answer.
        assert c.complete("q", model=OPENAI, cache="refresh").cached is False
        assert c.complete("q", model=OPENAI).cached == "exact"
        # Namespaces do not share answers.
        assert c.complete("q", model=OPENAI, cache={"namespace": "team-b"}).cached is False
        assert c.complete("q", model=OPENAI, cache={"namespace": "team-b"}).cached == "exact"
    assert sim.stats()["requests"] == 5


def test_per_request_ttl_expires(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        c.complete("short lived", model=OPENAI, cache={"ttl": 0.3})
        assert c.complete("short lived", model=OPENAI).cached == "exact"
        time.sleep(0.4)
        assert c.complete("short lived", model=OPENAI).cached is False
    assert sim.stats()["requests"] == 2


def test_clear_and_delete(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        r = c.complete("one", model=OPENAI)
        c.complete("two", model=OPENAI, cache={"namespace": "other"})
        wait_disk(c, 2)
        assert c.cache_delete(r.cache_key or "") is True
        assert c.cache_delete(r.cache_key or "") is False
        assert c.complete("one", model=OPENAI).cached is False
        assert c.cache_clear("other") == 1
        assert c.complete("two", model=OPENAI, cache={"namespace": "other"}).cached is False
        assert c.cache_clear() >= 1
        assert c.cache_stats()["memory"]["entries"] == 0


def test_entries_survive_a_restart(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        for i in range(5):
            c.complete(f"keep {i}", model=OPENAI)
        list(c.stream("keep streamed", model=ANTHROPIC))
    assert upstream_daemon.stop() == 0  # SIGTERM flushes the write-behind queue
    upstream_daemon.start()
    with Client(upstream_daemon.socket) as c:
        assert all(c.complete(f"keep {i}", model=OPENAI).cached == "exact" for i in range(5))
        stream = c.stream("keep streamed", model=ANTHROPIC)
        assert len(list(stream)) > 1 and stream.response is not None and stream.response.cached == "exact"
        stats = c.cache_stats()
    assert stats["hits_disk"] == 6 and sim.stats()["requests"] == 6


def test_kill_9_leaves_a_cache_that_opens(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        for i in range(20):
            c.complete(f"durable {i}", model=OPENAI)
        wait_disk(c, 20)
        # More writes in flight when the kill lands.
        for i in range(20, 40):
            c.complete(f"durable {i}", model=OPENAI)
    upstream_daemon.signal(signal.SIGKILL)
    upstream_daemon.proc.wait()  # type: ignore[union-attr]
    upstream_daemon.start()
    with Client(upstream_daemon.socket) as c:
        assert all(c.complete(f"durable {i}", model=OPENAI).cached == "exact" for i in range(20))
        assert c.cache_stats()["disk"]["damaged"] == 0


def test_corrupted_disk_entry_is_skipped_and_removed(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    with Client(upstream_daemon.socket) as c:
        good = c.complete("good", model=OPENAI)
        bad = c.complete("bad", model=OPENAI)
        wait_disk(c, 2)
    assert upstream_daemon.stop() == 0
    db = sqlite3.connect(upstream_daemon.home / ".claif" / "cache" / FILENAME)
    db.execute("UPDATE entries SET blob = X'7a0102030405' WHERE key = ?", (bad.cache_key,))
    db.commit()
    db.close()
    upstream_daemon.start()
    with Client(upstream_daemon.socket) as c:
        assert c.complete("good", model=OPENAI).cached == "exact"
        again = c.complete("bad", model=OPENAI)
        assert again.cached is False and again.text == bad.text
        assert c.cache_stats()["disk"]["damaged"] == 1
        assert good.cache_key
    assert any(line.get("event") == "damaged cache entry dropped" for line in upstream_daemon.logs())


def test_size_caps_hold(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__MEMORY_MAX_BYTES="8000", CLAIF_CACHE__MAX_SIZE="3000"))
    with Client(d.socket) as c:
        for i in range(40):
            c.complete(f"fill the cache with entry number {i} " + "pad " * 20, model=OPENAI)
            stats = c.cache_stats()
            assert stats["memory"]["bytes"] <= 8000
            assert stats["disk"]["bytes"] <= 3000
        stats = wait_disk(c, 1)
    assert stats["memory"]["evictions"] > 0 and stats["disk"]["evictions"] > 0
    assert d.stop() == 0


def test_cache_disabled(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__ENABLED="false"))
    with Client(d.socket) as c:
        assert c.complete("x", model=OPENAI).cached is False
        assert c.complete("x", model=OPENAI).cached is False
        with pytest.raises(NotFound):
            c.complete("x", model=OPENAI, cache="only")
    assert sim.stats()["requests"] == 2
    assert d.stop() == 0


def test_memory_only_cache(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__DIR=""))
    with Client(d.socket) as c:
        c.complete("x", model=OPENAI)
        assert c.complete("x", model=OPENAI).cached == "exact"
        assert c.cache_stats()["disk"] is None
    assert d.stop() == 0


def test_unwritable_cache_dir_degrades_to_memory(daemon_factory, sim: Sim, short_tmp) -> None:  # type: ignore[no-untyped-def]
    blocker = short_tmp / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__DIR=str(blocker / "cache")))
    with Client(d.socket) as c:
        c.complete("x", model=OPENAI)
        assert c.complete("x", model=OPENAI).cached == "exact"
    assert any("memory only" in str(line.get("event")) for line in d.logs())
    assert d.stop() == 0


def test_smart_strategy_in_stats(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env=sim_env(sim, CLAIF_CACHE__STRATEGY="smart"))
    with Client(d.socket) as c:
        c.complete("latest news please", model=OPENAI)
        assert c.complete("latest news please", model=OPENAI).cached == "exact"
        assert c.cache_stats()["strategy"] == "smart"
    assert d.stop() == 0


def test_cli_cache_commands(upstream_daemon: DaemonProcess, sim: Sim) -> None:
    from .test_cli import claif

    first = json.loads(claif("--json", "ask", "cli q", "--model", OPENAI, socket=upstream_daemon.socket).stdout)
    second = json.loads(claif("--json", "ask", "cli q", "--model", OPENAI, socket=upstream_daemon.socket).stdout)
    assert first["cached"] is False and second["cached"] == "exact" and second["cache_key"] == first["cache_key"]
    out = claif("--json", "ask", "cli q", "--model", OPENAI, "--no-cache", socket=upstream_daemon.socket)
    assert json.loads(out.stdout)["cached"] is False
    out = claif("--json", "ask", "cli q", "--model", OPENAI, "--refresh", socket=upstream_daemon.socket)
    assert json.loads(out.stdout)["cached"] is False
    assert claif("ask", "never asked", "--model", OPENAI, "--cache-only", socket=upstream_daemon.socket).returncode == 1
    stats = json.loads(claif("--json", "cache", "stats", socket=upstream_daemon.socket).stdout)
    assert stats["hits"] == 1 and stats["misses"] >= 2
    human = claif("cache", "stats", socket=upstream_daemon.socket).stdout
    assert "hit_rate" in human and "memory.bytes" in human
    out = claif("cache", "delete", first["cache_key"], socket=upstream_daemon.socket)
    assert out.returncode == 0
    assert claif("cache", "delete", "nosuchkey", socket=upstream_daemon.socket).returncode == 1
    out = claif("--json", "cache", "clear", socket=upstream_daemon.socket)
    assert out.returncode == 0 and "removed" in json.loads(out.stdout)
    assert claif("cache", "clear", "--namespace", "x", socket=upstream_daemon.socket).returncode == 0


def test_remembered_keys_follow_config_changes(daemon: DaemonProcess) -> None:
    """The hot path remembers a request's key by its bytes; a config change
    (here: where an alias points) must never serve the old model's answer."""
    with Client(daemon.socket) as c:
        c.config_set("models", {"fast": "echo/one"})
        assert c.complete("same bytes", model="fast").model == "echo/one"
        hit = c.complete("same bytes", model="fast")
        assert (hit.cached, hit.model) == ("exact", "echo/one")
        c.config_set("models", {"fast": "echo/two"})
        moved = c.complete("same bytes", model="fast")
        assert (moved.cached, moved.model) == (False, "echo/two")
        assert c.complete("same bytes", model="fast").model == "echo/two"
        c.config_set("cache.enabled", False)
        assert c.complete("same bytes", model="fast").cached is False


def test_outer_whitespace_is_the_same_question_inner_whitespace_is_not(daemon: DaemonProcess) -> None:
    """The exact tier keys text without its outer whitespace (issue 31), as
    the seed does; inner whitespace is kept (code depends on it)."""
    with Client(daemon.socket) as c:
        assert c.complete("What is machine learning?", system="Be brief.").cached is False
        assert c.complete("  What is machine learning?\n", system="  Be brief. ").cached == "exact"
        assert c.complete("What is  machine learning?", system="Be brief.").cached is False
        code = "def f():\n    return 1"
        assert c.complete(code).cached is False
        assert c.complete("def f():\n  return 1").cached is False  # indentation is meaning
        assert c.complete(code + "\n\n").cached == "exact"
