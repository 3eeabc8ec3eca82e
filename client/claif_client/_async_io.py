"""The async client's I/O: an anyio Unix-socket stream, one reader at a time.

Everything else about a connection lives in `connection.ClientConnection`
(handshake, ids, reply filing, cancel); `_async.py` is the API on top, and
`_sync.py` is generated from it (see `client/scripts/unasync.py`) over
`_sync_io.SyncIO`, which offers the same methods with blocking I/O.

No background task: whichever coroutine is waiting reads the next frame and
files it in the mailbox of the request it belongs to. So the client needs no
task group, connects lazily, and a cancelled caller loses no bytes:
`FrameDecoder` keeps partial frames across reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import anyio
import anyio.abc

from .connection import RECV_SIZE, ClientConnection, encode_request
from .errors import ClaifError, DaemonUnavailable, ProtocolError, Timeout
from .paths import check_peer
from .protocol import Cancel, Reply, Request, Welcome

__all__ = ["AsyncIO"]


class _Startable(Protocol):
    async def _start(self) -> None: ...


class AsyncIO:
    def __init__(self, socket_path: Path, timeout: float | None, protocol: ClientConnection) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.protocol = protocol
        self._demux = protocol.demux  # the same object for the client's life
        self._stream: anyio.abc.ByteStream | None = None
        self._send_lock = anyio.Lock(fast_acquire=True)
        # One caller reads at a time and files each frame in its mailbox;
        # the others wait for `_filed`, set after every read, so a reply is
        # taken at once even while the reader waits on a slow request. (Made
        # only when someone waits: a lone caller creates no event per read.)
        self._reading = False
        self._filed: anyio.Event | None = None

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def send(self, msg: Request) -> None:
        frame = encode_request(msg)
        async with self._send_lock:
            stream = self._stream or await self._connect()
            try:
                await stream.send(frame)
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                await self._drop_connection()
                if self._demux.others_in_flight(msg.id) or isinstance(msg, Cancel):
                    raise DaemonUnavailable("connection to the daemon was lost") from exc
            # Nothing was delivered on a dead connection: reconnect, resend once.
            stream = await self._connect()
            try:
                await stream.send(frame)
            except (anyio.BrokenResourceError, OSError) as exc:
                await self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc

    async def next_reply(self, rid: int) -> Reply:
        box = self._demux.mailboxes[rid]
        while not box:
            if self._reading:
                if self._filed is None:
                    self._filed = anyio.Event()
                await self._filed.wait()
                continue
            self._reading = True
            try:
                await self._read_frames()
            finally:
                self._reading = False
                filed, self._filed = self._filed, None
                if filed is not None:
                    filed.set()
        return box.popleft()

    async def give_up(self, rid: int) -> None:
        """Stop waiting for `rid`: cancel it on the daemon, drop its late replies."""
        cancel = self.protocol.give_up(rid)
        if cancel is None or self._stream is None:
            return
        # Shielded: this often runs because the caller was cancelled.
        with anyio.CancelScope(shield=True):
            try:
                await self.send(cancel)
            except ClaifError:
                pass

    def opened(self, stream: _Startable) -> None:
        """A stream was made: it sends its request when first iterated
        (`stream()` is a plain function, so it cannot await the send)."""

    def discard(self, rid: int) -> None:
        """A stream dropped unfinished: nothing to do without a loop to run on
        (the daemon cancels it when the connection closes)."""

    async def aclose(self) -> None:
        await self._drop_connection()

    async def _connect(self) -> anyio.abc.ByteStream:
        try:
            stream = await anyio.connect_unix(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"no daemon at {self.socket_path} ({exc.strerror}); start it with `claifd`"
            ) from exc
        except OSError as exc:
            raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        welcome: Welcome | None = None
        try:
            check_peer(stream.extra(anyio.abc.SocketAttribute.raw_socket), self.socket_path)
            with anyio.fail_after(self.timeout):
                try:
                    await stream.send(self.protocol.connect())
                    hello_sent = True
                except anyio.BrokenResourceError:
                    # The daemon may have answered (a refusal) and closed before
                    # the Hello went out: its answer is still ours to read.
                    hello_sent = False
                while welcome is None:
                    welcome = self.protocol.receive_welcome(await stream.receive(RECV_SIZE))
            if not hello_sent:
                raise DaemonUnavailable("daemon closed the connection during the handshake")
        except BaseException as exc:
            await anyio.aclose_forcefully(stream)
            if isinstance(exc, TimeoutError):
                raise Timeout("daemon did not answer the handshake") from exc
            if isinstance(exc, (anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                raise DaemonUnavailable("daemon closed the connection during the handshake") from exc
            raise
        self._stream = stream
        return stream

    async def _drop_connection(self) -> None:
        stream, self._stream = self._stream, None
        self._demux.reset()
        if stream is not None:
            await anyio.aclose_forcefully(stream)

    async def _read_frames(self) -> None:
        stream = self._stream
        if stream is None:
            raise DaemonUnavailable("not connected to the daemon")
        try:
            with anyio.fail_after(self.timeout):
                data = await stream.receive(RECV_SIZE)
        except TimeoutError as exc:
            raise Timeout(f"no reply from the daemon within {self.timeout}s") from exc
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            await self._drop_connection()
            raise DaemonUnavailable("the daemon closed the connection") from exc
        try:
            failure = self._demux.feed(data)
        except ProtocolError:
            await self._drop_connection()
            raise
        if failure is not None:
            await self._drop_connection()
            raise failure
