"""The protocol's connection rules for both ends, without I/O (in the manner
of h11): bytes and calls in, frames to send and decisions out. The daemon's
`server.Connection` and both clients do only the reading and writing.

    client                                daemon
      Hello{protocol, client}  ------->   handshake first: anything else, a
                                          bad frame or another version is
                                          answered with Error{id: 0} and closed
                               <-------   Welcome{protocol, daemon_version, capabilities}
      Request{id, ...}         ------->   ids are the client's; an id already in
                                          flight is refused (bad_request)
                               <-------   Chunk{id}*  then one terminal frame:
                                          Pong | Result | Done | Error
      Cancel{id}               ------->   no reply of its own: the request ends
                                          with Error{code: cancelled}

A frame whose header announces more than MAX_FRAME_SIZE ends the connection
(the byte stream cannot be trusted after it); a well-framed payload that is
no valid request is answered with an Error carrying its id when it has one,
and the connection lives on.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import msgspec

from ._demux import Demux
from .errors import BadRequest, ProtocolError, remote_error
from .framing import FrameDecoder, FrameTooLarge
from .protocol import (
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Cancel,
    Error,
    ErrorCode,
    Hello,
    Welcome,
    encode_frame,
    hello_decoder,
)

__all__ = ["Handshake", "ClientConnection", "ServerConnection", "DEFAULT_TIMEOUT", "RECV_SIZE", "encode_request"]

# Long enough for a slow model's whole answer; override per client.
DEFAULT_TIMEOUT = 600.0
# Below glibc's mmap threshold (128 KiB): a larger recv buffer is mmap'ed and
# unmapped on every call, which measured 17 us per recv instead of 2 us.
RECV_SIZE = 64 * 1024

_hello_decoder = hello_decoder()
T = TypeVar("T")


# ------------------------------------------------------------ client side


def encode_request(msg: msgspec.Struct) -> bytes:
    """The frame for a request, or BadRequest for values msgpack cannot carry
    (an integer over 64 bits, a lone surrogate in a string, nesting too deep)."""
    try:
        return bytes(encode_frame(msg))
    except (OverflowError, UnicodeEncodeError, RecursionError, TypeError, ValueError) as exc:
        raise BadRequest(ErrorCode.BAD_REQUEST, f"the request cannot be encoded: {exc}") from exc



PROJECT_FILE = ".claif.json"


def caller_place() -> tuple[str, str]:
    """This process's working directory, and the nearest `.claif.json` at or
    above it ("" when none; both "" when the directory is gone)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return "", ""
    directory = cwd
    while True:
        candidate = os.path.join(directory, PROJECT_FILE)
        if os.path.isfile(candidate):
            return cwd, candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return cwd, ""
        directory = parent


class Handshake:
    """Send `hello`; `feed` what comes back until it returns the Welcome
    (None while more bytes are needed). A bad or refused handshake raises
    `ProtocolError`."""

    def __init__(self, client_name: str) -> None:
        cwd, project = caller_place()
        self.hello = bytes(encode_frame(Hello(protocol=PROTOCOL_VERSION, client=client_name, cwd=cwd,
                                              project=project)))
        self._frames = FrameDecoder()

    def __repr__(self) -> str:
        return f"<Handshake pending={self._frames.pending_bytes}B>"

    def feed(self, data: bytes) -> Welcome | None:
        try:
            payloads = self._frames.feed(data)
            if not payloads:
                return None
            welcome = _hello_decoder.decode(payloads[0])
        except (msgspec.DecodeError, FrameTooLarge) as exc:
            raise ProtocolError(f"bad handshake reply: {exc}") from exc
        if isinstance(welcome, Error) and welcome.code == ErrorCode.FORBIDDEN:
            raise remote_error(welcome.code, welcome.message)
        if not isinstance(welcome, Welcome):
            detail = f"{welcome.code}: {welcome.message}" if isinstance(welcome, Error) else "no Welcome"
            raise ProtocolError(f"handshake refused: {detail}")
        return welcome


class ClientConnection:
    """A client's side: the handshake, request ids, replies filed by id
    (`demux`), and giving up on a request."""

    def __init__(self, client_name: str) -> None:
        self.client_name = client_name
        self.demux = Demux()
        self.welcome: Welcome | None = None
        self._ids = itertools.count(1)
        self._handshake = Handshake(client_name)

    def __repr__(self) -> str:
        state = "open" if self.welcome is not None else "closed"
        return f"<ClientConnection {state} {self.demux!r}>"

    def connect(self) -> bytes:
        """A new connection begins: the Hello to send first."""
        self.welcome = None
        self._handshake = Handshake(self.client_name)
        self.demux.reset()
        return self._handshake.hello

    def receive_welcome(self, data: bytes) -> Welcome | None:
        """The handshake's answer so far (ProtocolError if refused)."""
        self.welcome = self._handshake.feed(data)
        return self.welcome

    def next_id(self) -> int:
        return next(self._ids)

    def give_up(self, rid: int) -> Cancel | None:
        """Stop waiting for `rid`: its late frames are dropped, and the Cancel
        to send is returned while the daemon may still be working on it."""
        return Cancel(id=rid) if self.demux.abandon(rid) else None


# ------------------------------------------------------------ daemon side


class ServerConnection(Generic[T]):
    """The daemon's side of one connection: framing (`frames.feed` raises
    FrameTooLarge: close the connection), the handshake, decoding requests,
    the duplicate-id check and cancellation. Each request in flight holds a
    token of the caller's (the daemon keeps its cancel scope there)."""

    __slots__ = ("decoder", "welcome", "frames", "open", "client", "cwd", "project", "in_flight")

    def __init__(self, decoder: msgspec.msgpack.Decoder[Any], welcome: Welcome) -> None:
        self.decoder = decoder
        self.welcome = bytes(encode_frame(welcome))
        self.frames = FrameDecoder()
        self.open = False
        self.client = ""  # the name the client gave in its Hello
        self.cwd = ""  # where it runs, and its project file ("" if none): see Hello
        self.project = ""
        self.in_flight: dict[int, T] = {}

    def __repr__(self) -> str:
        return f"<ServerConnection {'open' if self.open else 'handshake'} in_flight={len(self.in_flight)}>"

    def receive_hello(self, payload: bytes | memoryview) -> tuple[bytes, bool]:
        """The frame to send for the first payload, and whether the
        connection is open (False: send it, then close)."""
        try:
            hello = _hello_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            return _refusal(ErrorCode.HANDSHAKE_REQUIRED, f"expected a Hello frame first: {exc}"), False
        if not isinstance(hello, Hello):
            return _refusal(ErrorCode.HANDSHAKE_REQUIRED, "expected a Hello frame first"), False
        if hello.protocol != PROTOCOL_VERSION:
            return _refusal(
                ErrorCode.PROTOCOL_MISMATCH,
                f"client speaks protocol {hello.protocol}, this daemon speaks {PROTOCOL_VERSION}; "
                "upgrade the older side",
            ), False
        self.open = True
        self.client = hello.client
        self.cwd = hello.cwd
        self.project = hello.project
        return self.welcome, True

    def receive_request(self, payload: bytes | memoryview) -> Any:
        """The decoded request (a `Cancel` included), or the `Error` to send
        back for a payload that is no valid request."""
        try:
            return self.decoder.decode(payload)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            return _rejection(payload, exc)

    def begin(self, rid: int, token: T) -> Error | None:
        """Track request `rid`; the Error to send instead if `rid` is already in flight."""
        if rid in self.in_flight:
            return Error(id=rid, code=ErrorCode.BAD_REQUEST, message=f"request id {rid} is already in flight")
        self.in_flight[rid] = token
        return None

    def end(self, rid: int) -> None:
        self.in_flight.pop(rid, None)

    def cancel(self, rid: int) -> T | None:
        """A Cancel for `rid`: its token, if it is in flight (else nothing to do)."""
        return self.in_flight.get(rid)

    def lost(self) -> Iterable[T]:
        """The connection is gone: every request in flight is to be cancelled."""
        return list(self.in_flight.values())


def _refusal(code: str, message: str) -> bytes:
    return bytes(encode_frame(Error(id=0, code=code, message=message)))


def _rejection(payload: bytes | memoryview, exc: Exception) -> Error:
    """The answer to a frame that is not a valid request, with its id if it has one."""
    try:
        raw: Any = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):  # invalid UTF-8, nesting too deep
        raw = None
    rid = raw.get("id") if isinstance(raw, dict) else None
    rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(kind, str) and kind not in REQUEST_TYPES:
        return Error(id=rid, code=ErrorCode.UNKNOWN_METHOD, message=f"unknown method {kind!r}")
    if raw is None:
        return Error(id=rid, code=ErrorCode.BAD_REQUEST, message=f"payload is not valid msgpack: {exc}")
    return Error(id=rid, code=ErrorCode.BAD_REQUEST, message=f"invalid request: {exc}")
