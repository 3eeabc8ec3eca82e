"""What both clients share about a connection, without I/O: the handshake
and the constants. (Replies are filed by `_demux.Demux`.)

    client                                daemon
      Hello{protocol, client}  ------->
                               <-------   Welcome{protocol, daemon_version, capabilities}
                                          or Error{code} and close
"""

from __future__ import annotations

import msgspec

from .errors import ProtocolError
from .framing import FrameDecoder, FrameTooLarge
from .protocol import PROTOCOL_VERSION, Error, Hello, Welcome, encode_frame, hello_decoder

__all__ = ["Handshake", "DEFAULT_TIMEOUT", "RECV_SIZE"]

# Long enough for a slow model's whole answer; override per client.
DEFAULT_TIMEOUT = 600.0
# Below glibc's mmap threshold (128 KiB): a larger recv buffer is mmap'ed and
# unmapped on every call, which measured 17 us per recv instead of 2 us.
RECV_SIZE = 64 * 1024

_hello_decoder = hello_decoder()


class Handshake:
    """Send `hello`; `feed` what comes back until it returns the Welcome
    (None while more bytes are needed). A bad or refused handshake raises
    `ProtocolError`."""

    def __init__(self, client_name: str) -> None:
        self.hello = bytes(encode_frame(Hello(protocol=PROTOCOL_VERSION, client=client_name)))
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
        if not isinstance(welcome, Welcome):
            detail = f"{welcome.code}: {welcome.message}" if isinstance(welcome, Error) else "no Welcome"
            raise ProtocolError(f"handshake refused: {detail}")
        return welcome
