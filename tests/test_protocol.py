"""The wire protocol without sockets: encoding, decoding and framing."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from claif_client.framing import FrameDecoder, FrameTooLarge
from claif_client.protocol import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    REQUEST_TYPES,
    Cancel,
    Chunk,
    Complete,
    CompletionRequest,
    CompletionResponse,
    Done,
    Error,
    GetStatus,
    Hello,
    Message,
    Ping,
    Pong,
    Result,
    Usage,
    Welcome,
    encode_frame,
    hello_decoder,
    reply_decoder,
    request_decoder,
)


def payload_of(frame: bytes | bytearray) -> bytes:
    size = int.from_bytes(frame[:HEADER_SIZE], "big")
    assert len(frame) == HEADER_SIZE + size
    return bytes(frame[HEADER_SIZE:])


def test_requests_round_trip() -> None:
    dec = request_decoder()
    req = CompletionRequest(
        messages=[Message(role="user", content="hi"), Message(role="user", content=[{"type": "text", "text": "x"}])],
        model="echo/x", system="be brief", max_tokens=10, temperature=0.5, stop=["\n"],
        tools=[{"name": "t"}], tool_choice={"type": "auto"}, metadata={"trace": 1}, extra={"delay_ms": 1},
    )
    for msg in (Ping(id=1), GetStatus(id=2), Complete(id=3, request=req, stream=True), Cancel(id=3)):
        assert dec.decode(payload_of(encode_frame(msg))) == msg


def test_replies_round_trip() -> None:
    dec = reply_decoder()
    resp = CompletionResponse(text="t", model="echo/x", usage=Usage(input_tokens=1, output_tokens=2), cached="exact")
    for msg in (
        Pong(id=1), Result(id=2, value={"a": [1, 2]}), Chunk(id=3, text="x"), Done(id=3, response=resp),
        Error(id=4, code="rate_limited", message="slow down", retry_after=1.5, details={"status": 429}),
    ):
        assert dec.decode(payload_of(encode_frame(msg))) == msg


def test_handshake_messages() -> None:
    dec = hello_decoder()
    assert dec.decode(payload_of(encode_frame(Hello(protocol=1, client="c")))) == Hello(protocol=1, client="c")
    w = Welcome(protocol=1, daemon_version="0.1.0", capabilities=["stream"])
    assert dec.decode(payload_of(encode_frame(w))) == w


def test_payload_is_a_map_tagged_by_type() -> None:
    raw = msgspec.msgpack.decode(payload_of(encode_frame(Ping(id=7))))
    assert raw == {"type": "ping", "id": 7}


def test_unknown_fields_are_ignored() -> None:
    """Forward compatibility: a newer peer's extra fields do not break us."""
    payload = msgspec.msgpack.encode({"type": "ping", "id": 5, "added_in_v9": {"x": 1}})
    assert request_decoder().decode(payload) == Ping(id=5)
    payload = msgspec.msgpack.encode({"type": "done", "id": 5, "response": {"text": "a", "model": "m", "new": 1}})
    reply = reply_decoder().decode(payload)
    assert isinstance(reply, Done) and reply.response is not None and reply.response.text == "a"


def test_wrong_shape_is_a_validation_error() -> None:
    dec = request_decoder()
    with pytest.raises(msgspec.ValidationError):
        dec.decode(msgspec.msgpack.encode({"type": "ping", "id": "not-an-int"}))
    with pytest.raises(msgspec.ValidationError):
        dec.decode(msgspec.msgpack.encode({"type": "no.such.method", "id": 1}))
    with pytest.raises(msgspec.DecodeError):
        dec.decode(b"\xc1\xc1\xc1")


def test_request_types_lists_every_method() -> None:
    assert REQUEST_TYPES == {
        "ping", "status", "complete", "batch", "cancel", "cache.stats", "cache.clear", "cache.delete",
        "config.get", "config.set", "config.show", "config.sources", "config.reload", "config.validate",
        "session.create", "session.get", "session.list", "session.delete", "session.recover", "session.export", "session.import",
        "session.fork", "health", "metrics", "config.unset", "models", "log", "spend",
    }


# ------------------------------------------------------------------ framing


def test_frames_split_across_reads() -> None:
    frames = b"".join(bytes(encode_frame(Ping(id=i))) for i in range(5))
    dec = FrameDecoder()
    out = []
    for i in range(len(frames)):
        out.extend(bytes(p) for p in dec.feed(frames[i : i + 1]))
    assert [request_decoder().decode(p).id for p in out] == [0, 1, 2, 3, 4]
    assert dec.pending_bytes == 0


def test_many_frames_in_one_read() -> None:
    frames = b"".join(bytes(encode_frame(Ping(id=i))) for i in range(100))
    out = FrameDecoder().feed(frames)
    assert len(out) == 100


def test_oversized_length_rejected_from_the_header_alone() -> None:
    dec = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed((1025).to_bytes(4, "big"))  # no payload byte has been sent
    assert info.value.size == 1025
    assert FrameDecoder().max_frame_size == MAX_FRAME_SIZE == 16 * 1024 * 1024


def test_oversized_length_after_a_good_frame() -> None:
    dec = FrameDecoder(max_frame_size=1024)
    data = bytes(encode_frame(Ping(id=1))) + (10**9).to_bytes(4, "big")
    with pytest.raises(FrameTooLarge):
        dec.feed(data)


def test_truncated_frame_stays_pending() -> None:
    dec = FrameDecoder()
    frame = bytes(encode_frame(Ping(id=1)))
    assert dec.feed(frame[:-1]) == []
    assert dec.pending_bytes == len(frame) - 1
    assert [bytes(p) for p in dec.feed(frame[-1:])] == [frame[4:]]


def test_empty_payload_frame() -> None:
    assert [bytes(p) for p in FrameDecoder().feed(b"\x00\x00\x00\x00")] == [b""]


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_any_chunking_yields_the_same_payloads(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got.extend(bytes(p) for p in dec.feed(stream[pos : pos + step]))
        pos += step
        i += 1
    assert got == payloads
    assert dec.pending_bytes == 0


@given(st.text(max_size=200), st.integers(0, 2**31), st.booleans())
def test_complete_round_trips_for_any_text(text: str, rid: int, stream: bool) -> None:
    msg = Complete(id=rid, request=CompletionRequest(messages=[Message(role="user", content=text)]), stream=stream)
    assert request_decoder().decode(payload_of(encode_frame(msg))) == msg


# ------------------------------------------------------------ client demux


def test_demux_files_replies_by_id_and_drops_abandoned() -> None:
    from claif_client._demux import Demux

    d = Demux()
    box1, box2 = d.open(1), d.open(2)
    d.open(3)
    assert d.abandon(3) is True  # nothing received yet: the daemon may still be working
    data = b"".join(
        bytes(encode_frame(m))
        for m in (Chunk(id=2, text="a"), Chunk(id=3, text="late"), Pong(id=1), Error(id=3, code="cancelled", message="")
                  , Done(id=2))
    )
    assert d.feed(data) is None
    assert list(box1) == [Pong(id=1)]
    assert [type(r).__name__ for r in box2] == ["Chunk", "Done"]
    assert d.abandoned == set(), "the terminal frame of an abandoned request ends its filtering"
    d.finish(1)
    assert d.abandon(2) is False  # its terminal reply is already here
    assert d.mailboxes == {}


def test_demux_reports_connection_errors() -> None:
    from claif_client._demux import Demux

    failure = Demux().feed(bytes(encode_frame(Error(id=0, code="too_large", message="big"))))
    assert failure is not None and failure.code == "too_large"
