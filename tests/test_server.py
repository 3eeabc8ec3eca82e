"""The real daemon over a real socket, driven frame by frame."""

from __future__ import annotations

import os

import msgspec

from claif_client import Client
from claif_client.protocol import (
    Cancel,
    Chunk,
    Complete,
    CompletionRequest,
    Done,
    Error,
    GetStatus,
    Hello,
    Message,
    Ping,
    Pong,
    Result,
    encode_frame,
    hello_decoder,
)

from .conftest import DaemonProcess, RawConnection, eventually


def req(text: str, **kw: object) -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


def slow(text: str, delay_ms: int = 50) -> CompletionRequest:
    return req(text, extra={"delay_ms": delay_ms})


def test_ping_and_status(raw: RawConnection) -> None:
    raw.send(Ping(id=1))
    assert raw.read() == Pong(id=1)
    raw.send(GetStatus(id=2))
    reply = raw.read()
    assert isinstance(reply, Result) and reply.id == 2
    status = reply.value
    for key in ("version", "pid", "uptime_s", "requests_total", "cache", "sessions", "upstream", "config"):
        assert key in status
    assert set(status["cache"]) >= {"hits", "misses", "coalesced", "entries", "bytes"}
    assert set(status["sessions"]) >= {"in_memory", "total", "memory_bytes", "memory_budget_bytes", "evictions"}
    assert set(status["upstream"]) >= {"requests", "retries", "errors"}
    assert set(status["config"]) >= {"generation", "last_error"}
    assert status["requests_total"] == 3  # ping, this status, and the fixture's start check


def test_multiplexed_requests_answer_out_of_order(raw: RawConnection) -> None:
    """A slow request sent first does not hold back fast ones on the same connection."""
    raw.send(Complete(id=1, request=slow("one two three four five", delay_ms=60)))
    for i in range(2, 12):
        raw.send(Complete(id=i, request=req(f"fast {i}")))
    raw.send(Ping(id=100))
    order = []
    replies = {}
    while len(replies) < 12:
        r = raw.read()
        order.append(r.id)
        replies[r.id] = r
    assert order[-1] == 1, "the slow request should finish last"
    for i in range(2, 12):
        done = replies[i]
        assert isinstance(done, Done) and done.response is not None
        assert done.response.text == f"echo: fast {i}"
    assert isinstance(replies[100], Pong)


def test_many_concurrent_requests_on_one_connection(raw: RawConnection) -> None:
    n = 300
    raw.send_raw(b"".join(bytes(encode_frame(Complete(id=i, request=req(f"m{i}")))) for i in range(1, n + 1)))
    seen = {}
    while len(seen) < n:
        r = raw.read()
        assert isinstance(r, Done) and r.response is not None
        seen[r.id] = r.response.text
    assert seen == {i: f"echo: m{i}" for i in range(1, n + 1)}


def test_stream_chunks_then_done(raw: RawConnection) -> None:
    raw.send(Complete(id=5, request=req("alpha beta gamma"), stream=True))
    texts = []
    while True:
        r = raw.read()
        assert r.id == 5
        if isinstance(r, Chunk):
            texts.append(r.text)
            continue
        assert isinstance(r, Done) and r.response is not None
        break
    assert texts == ["echo: ", "alpha ", "beta ", "gamma"]
    assert "".join(texts) == r.response.text
    assert r.response.usage.output_tokens == 4


def test_cancel_mid_stream(raw: RawConnection) -> None:
    raw.send(Complete(id=9, request=slow(" ".join(["w"] * 200), delay_ms=20), stream=True))
    first = raw.read()
    assert isinstance(first, Chunk)
    raw.send(Cancel(id=9))
    while True:
        r = raw.read()
        if not isinstance(r, Chunk):
            break
    assert isinstance(r, Error) and r.code == "cancelled" and r.id == 9
    # The connection is still good, and nothing is left in flight.
    raw.send(GetStatus(id=10))
    status = raw.read()
    assert isinstance(status, Result) and status.value["in_flight"] == 0


def test_cancel_of_unknown_id_is_ignored(raw: RawConnection) -> None:
    raw.send(Cancel(id=12345))
    raw.send(Ping(id=1))
    assert raw.read() == Pong(id=1)


def test_duplicate_in_flight_id_is_refused(raw: RawConnection) -> None:
    raw.send(Complete(id=3, request=slow("a b c", delay_ms=100)))
    raw.send(Complete(id=3, request=req("again")))
    first = raw.read()
    assert isinstance(first, Error) and first.code == "bad_request" and "already in flight" in first.message
    assert isinstance(raw.read(), Done)


def test_invalid_requests_get_typed_errors_and_the_connection_survives(raw: RawConnection) -> None:
    cases = [
        ({"type": "ping", "id": "x"}, 0, "bad_request"),
        ({"type": "complete", "id": 4, "request": {"messages": "nope"}}, 4, "bad_request"),
        ({"type": "teleport", "id": 5}, 5, "unknown_method"),
        ([1, 2, 3], 0, "bad_request"),
        ({"id": 6}, 6, "bad_request"),
    ]
    for body, rid, code in cases:
        raw.send_raw(len(p := msgspec.msgpack.encode(body)).to_bytes(4, "big") + p)
        r = raw.read()
        assert isinstance(r, Error), body
        assert (r.id, r.code) == (rid, code), (body, r)
    # Not msgpack at all, but well framed: answered, connection kept.
    raw.send_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")
    r = raw.read()
    assert isinstance(r, Error) and r.code == "bad_request"
    raw.send(Ping(id=77))
    assert raw.read() == Pong(id=77)


def test_semantic_errors_are_bad_request(raw: RawConnection) -> None:
    for i, bad in enumerate(
        [
            CompletionRequest(messages=[]),
            req("x", max_tokens=0),
            req("x", temperature=5.0),
            CompletionRequest(messages=[Message(role="wizard", content="x")]),
            req("x", model="no-slash-and-no-alias"),
            req("x", model="nosuch/provider"),
        ],
        start=1,
    ):
        raw.send(Complete(id=i, request=bad))
        r = raw.read()
        assert isinstance(r, Error) and r.code == "bad_request" and r.id == i, r


def test_provider_failures_are_typed(raw: RawConnection) -> None:
    for i, fail in enumerate(["upstream_error", "rate_limited", "timeout"], start=1):
        raw.send(Complete(id=i, request=req("x", extra={"fail": fail})))
        r = raw.read()
        assert isinstance(r, Error) and r.code == fail


def test_request_timeout_in_daemon(raw: RawConnection) -> None:
    raw.send(Complete(id=1, request=msgspec.structs.replace(slow("a b c d e f g", delay_ms=200), timeout=0.2)))
    r = raw.read()
    assert isinstance(r, Error) and r.code == "timeout"


def _other_connection_works(daemon: DaemonProcess) -> None:
    with Client(daemon.socket, timeout=10) as c:
        assert c.complete("still here").text == "echo: still here"


def test_oversized_length_closes_only_that_connection(daemon: DaemonProcess) -> None:
    bystander = RawConnection(daemon.socket)
    bad = RawConnection(daemon.socket)
    bad.send_raw((64 * 1024 * 1024).to_bytes(4, "big"))  # 64 MiB announced, nothing sent
    r = bad.read()
    assert isinstance(r, Error) and r.code == "too_large" and r.id == 0
    assert bad.is_closed_by_peer()
    bystander.send(Ping(id=1))
    assert bystander.read() == Pong(id=1)
    _other_connection_works(daemon)


def test_garbage_instead_of_hello(daemon: DaemonProcess) -> None:
    # A well-framed payload that is no Hello, then a length over the limit:
    # each ends its connection with its own error, and nothing else.
    bad = RawConnection(daemon.socket, hello=False)
    bad.send_raw((60).to_bytes(4, "big") + os.urandom(60))
    r = hello_decoder().decode(bad.read_payload())
    assert isinstance(r, Error) and r.code == "handshake_required"
    assert bad.is_closed_by_peer()
    big = RawConnection(daemon.socket, hello=False)
    big.send_raw(b"\xff\xff\xff\xff" + os.urandom(60))
    r = hello_decoder().decode(big.read_payload())
    assert isinstance(r, Error) and r.code == "too_large"
    assert big.is_closed_by_peer()
    _other_connection_works(daemon)


def test_random_bytes_after_hello(daemon: DaemonProcess) -> None:
    for seed in range(5):
        bad = RawConnection(daemon.socket)
        bad.send_raw(os.urandom(200 + seed))
        bad.sock.shutdown(1)
        assert bad.is_closed_by_peer(), "daemon must close a connection that ends mid-frame"
        bad.close()
    _other_connection_works(daemon)


def test_truncated_frame_then_disconnect(daemon: DaemonProcess) -> None:
    bad = RawConnection(daemon.socket)
    frame = bytes(encode_frame(Complete(id=1, request=req("cut"))))
    bad.send_raw(frame[: len(frame) // 2])
    bad.close()
    _other_connection_works(daemon)
    assert eventually(lambda: any(line.get("event") == "connection closed mid-frame" for line in daemon.logs()))


def test_protocol_version_mismatch(daemon: DaemonProcess) -> None:
    bad = RawConnection(daemon.socket, hello=False)
    bad.send(Hello(protocol=999, client="future"))
    r = hello_decoder().decode(bad.read_payload())
    assert isinstance(r, Error) and r.code == "protocol_mismatch"
    assert "999" in r.message
    assert bad.is_closed_by_peer()


def test_request_before_hello_is_refused(daemon: DaemonProcess) -> None:
    bad = RawConnection(daemon.socket, hello=False)
    bad.send(Ping(id=1))
    r = hello_decoder().decode(bad.read_payload())
    assert isinstance(r, Error) and r.code == "handshake_required"


def test_client_disconnect_cancels_its_requests(daemon: DaemonProcess) -> None:
    conn = RawConnection(daemon.socket)
    conn.send(Complete(id=1, request=slow(" ".join(["w"] * 500), delay_ms=20), stream=True))
    assert isinstance(conn.read(), Chunk)
    conn.close()
    with Client(daemon.socket) as c:
        # Unless cancelled, the request would run for 10 s more.
        assert eventually(lambda: c.status()["in_flight"] == 0, timeout=3)


def test_a_reply_over_the_frame_limit_becomes_a_too_large_error(daemon: DaemonProcess) -> None:
    """A session grows past the frame limit through requests that each fit;
    reading it whole is answered with too_large, and the connection lives on."""
    from claif_client.protocol import MAX_FRAME_SIZE, SessionGet

    with Client(daemon.socket, timeout=60) as c:
        session = c.session_create(title="big", model="echo/x")
        for part in "abc":  # each send adds a quarter of the limit, and its echo another
            c.session_send(session["id"], part * (MAX_FRAME_SIZE // 4))
    conn = RawConnection(daemon.socket, timeout=60)
    conn.send(SessionGet(id=7, session_id=session["id"]))
    reply = conn.read()
    assert isinstance(reply, Error) and reply.id == 7 and reply.code == "too_large"
    assert str(MAX_FRAME_SIZE) in reply.message
    conn.send(Ping(id=8))
    assert conn.read() == Pong(id=8)
    conn.close()
