"""The protocol's connection rules without sockets (claif_client.connection):
both ends driven in-process, bytes in, frames and decisions out."""

from __future__ import annotations

import msgspec
import pytest

from claif_client.connection import ClientConnection, ServerConnection
from claif_client.errors import ProtocolError
from claif_client.framing import FrameDecoder, FrameTooLarge
from claif_client.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Done,
    Error,
    Hello,
    Ping,
    Pong,
    Request,
    Welcome,
    encode_frame,
    hello_decoder,
)

WELCOME = Welcome(protocol=PROTOCOL_VERSION, daemon_version="t", capabilities=["cancel"])


def server() -> ServerConnection[str]:
    return ServerConnection(msgspec.msgpack.Decoder(Request), WELCOME)


def payloads(data: bytes) -> list[bytes]:
    return [bytes(p) for p in FrameDecoder().feed(data)]


def test_a_client_and_a_server_shake_hands_in_process() -> None:
    client, srv = ClientConnection("me"), server()
    (hello,) = srv.frames.feed(client.connect())
    frame, opened = srv.receive_hello(hello)
    assert opened and srv.open and srv.client == "me"
    assert client.receive_welcome(frame[:3]) is None  # a partial frame waits for more bytes
    assert client.receive_welcome(frame[3:]) == WELCOME


@pytest.mark.parametrize(("first", "code"), [
    (Ping(id=1), "handshake_required"),
    (Hello(protocol=PROTOCOL_VERSION + 1, client="future"), "protocol_mismatch"),
])
def test_the_handshake_comes_first_and_speaks_one_version(first: msgspec.Struct, code: str) -> None:
    srv = server()
    frame, opened = srv.receive_hello(payloads(bytes(encode_frame(first)))[0])
    reply = hello_decoder().decode(payloads(frame)[0])
    assert not opened and not srv.open
    assert isinstance(reply, Error) and reply.id == 0 and reply.code == code
    with pytest.raises(ProtocolError, match=code):
        ClientConnection("me").receive_welcome(frame)


def test_a_frame_over_the_limit_is_refused_from_its_header() -> None:
    with pytest.raises(FrameTooLarge):
        server().frames.feed(b"\xff\xff\xff\xff")


def test_requests_decode_and_bad_payloads_become_errors_with_their_id() -> None:
    srv = server()
    assert srv.receive_request(payloads(bytes(encode_frame(Ping(id=4))))[0]) == Ping(id=4)
    unknown = srv.receive_request(msgspec.msgpack.encode({"type": "nope", "id": 9}))
    assert isinstance(unknown, Error) and (unknown.id, unknown.code) == (9, "unknown_method")
    invalid = srv.receive_request(msgspec.msgpack.encode({"type": "ping", "id": "x"}))
    assert isinstance(invalid, Error) and (invalid.id, invalid.code) == (0, "bad_request")
    garbage = srv.receive_request(b"\xc1")
    assert isinstance(garbage, Error) and garbage.code == "bad_request" and "msgpack" in garbage.message


def test_ids_in_flight_are_unique_and_cancel_finds_their_token() -> None:
    srv = server()
    assert srv.begin(1, "scope-1") is None
    refused = srv.begin(1, "again")
    assert isinstance(refused, Error) and refused.code == "bad_request" and "already in flight" in refused.message
    assert srv.cancel(1) == "scope-1" and srv.cancel(2) is None
    assert srv.begin(2, "scope-2") is None
    assert sorted(srv.lost()) == ["scope-1", "scope-2"]
    srv.end(1)
    assert srv.begin(1, "reused") is None  # a finished id may be used again


def test_a_client_gives_up_with_a_cancel_only_while_the_daemon_may_be_working() -> None:
    client = ClientConnection("me")
    rid = client.next_id()
    client.demux.open(rid)
    assert client.give_up(rid) == Cancel(id=rid)
    done = client.next_id()
    client.demux.open(done)
    client.demux.feed(bytes(encode_frame(Done(id=done, response=None))))  # type: ignore[arg-type]
    assert client.give_up(done) is None  # its terminal frame already arrived
    assert client.next_id() == done + 1


def test_late_frames_of_an_abandoned_request_are_dropped() -> None:
    client = ClientConnection("me")
    rid = client.next_id()
    client.demux.open(rid)
    client.give_up(rid)
    other = client.next_id()
    box = client.demux.open(other)
    client.demux.feed(bytes(encode_frame(Pong(id=rid))) + bytes(encode_frame(Pong(id=other))))
    assert list(box) == [Pong(id=other)] and rid not in client.demux.abandoned
