"""The blocking client's I/O: one Unix socket, threads taking turns reading.

The same methods as `_async_io.AsyncIO`, so that `_sync.py` is generated from
`_async.py` (see `client/scripts/unasync.py`); everything else about a
connection lives in `connection.ClientConnection`.

* Lazy connect: nothing touches the socket until the first call. After the
  daemon restarts, the next call finds the old connection dead (writing to a
  Unix socket whose peer has gone fails at once with EPIPE, so nothing was
  delivered) and reconnects and resends once.
* Replies are read by whichever caller is waiting; a frame for another request
  id is kept in that request's mailbox. That lets an open stream and ordinary
  calls (or several threads) share the connection.
* `timeout` bounds each wait for the daemon's next frame (kernel timeouts:
  SO_RCVTIMEO/SO_SNDTIMEO). On a timeout the request is cancelled on the
  daemon and its late replies are dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Protocol

from .connection import RECV_SIZE, ClientConnection, encode_request
from .errors import ClaifError, DaemonUnavailable, ProtocolError, Timeout
from .paths import check_peer
from .protocol import Cancel, Reply, Request, Welcome

__all__ = ["SyncIO"]


class _Startable(Protocol):
    def _start(self) -> None: ...


class SyncIO:
    def __init__(self, socket_path: Path, timeout: float | None, protocol: ClientConnection) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.protocol = protocol
        self._demux = protocol.demux  # the same object for the client's life
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        # One thread reads at a time (it holds `read_lock`) and files each
        # frame in its mailbox; the others wait on `_filed`, notified after
        # every read, so a reply is taken at once even while the reader waits
        # on a slow request. A lone thread only takes `read_lock`.
        self.read_lock = threading.Lock()
        self._filed = threading.Condition(threading.Lock())
        self._waiting = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, msg: Request) -> None:
        frame = encode_request(msg)
        with self._send_lock:
            sock = self._sock or self._connect()
            try:
                sock.sendall(frame)
                return
            except BlockingIOError as exc:
                # SO_SNDTIMEO fired: the daemon stopped reading. Part of the
                # frame may be sent, so this connection cannot be reused.
                self._drop_connection()
                raise Timeout(f"daemon did not accept the request within {self.timeout}s") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if self._demux.others_in_flight(msg.id) or isinstance(msg, Cancel):
                    raise DaemonUnavailable("connection to the daemon was lost") from exc
            except OSError as exc:
                self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc
            # The daemon went away between calls (e.g. it was restarted): a
            # failed write to a Unix socket delivered nothing, so resend once.
            try:
                self._connect().sendall(frame)
            except OSError as exc:
                self._drop_connection()
                raise DaemonUnavailable(f"cannot send to the daemon: {exc}") from exc

    def next_reply(self, rid: int) -> Reply:
        """Block until the next frame for request `rid` arrives."""
        box = self._demux.mailboxes[rid]
        while not box:
            if self.read_lock.acquire(blocking=False):
                try:
                    self._read_frames()
                finally:
                    self.read_lock.release()
                    # Read after the release: a waiter counts itself before it
                    # checks the lock, so one of the two always sees the other.
                    if self._waiting:
                        with self._filed:
                            self._filed.notify_all()
            else:
                with self._filed:
                    self._waiting += 1
                    if self.read_lock.locked() and not box:
                        self._filed.wait()
                    self._waiting -= 1
        return box.popleft()

    def give_up(self, rid: int) -> None:
        """Stop waiting for `rid`: cancel it on the daemon, drop its late replies."""
        cancel = self.protocol.give_up(rid)
        if cancel is not None and self._sock is not None:
            try:
                self.send(cancel)
            except ClaifError:
                pass

    def opened(self, stream: _Startable) -> None:
        """A stream was made: its request is sent at once, so `stream()`
        fails right there when the daemon cannot be reached."""
        stream._start()

    def discard(self, rid: int) -> None:
        """A stream dropped unfinished (garbage-collected): cancel it, so the
        daemon does not keep streaming."""
        if self._sock is not None:
            try:
                self.give_up(rid)
            except Exception:
                pass

    def close(self) -> None:
        self._drop_connection()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonUnavailable(
                f"no daemon at {self.socket_path} ({exc.strerror}); start it with `claifd`"
            ) from exc
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        welcome: Welcome | None = None
        try:
            check_peer(sock, self.socket_path)
            try:
                sock.sendall(self.protocol.connect())
                hello_sent = True
            except (BrokenPipeError, ConnectionResetError):
                # The daemon may have answered (a refusal) and closed before
                # the Hello went out: its answer is still ours to read.
                hello_sent = False
            while welcome is None:
                try:
                    data = sock.recv(RECV_SIZE)
                except ConnectionResetError:  # closed with our Hello unread: its answer came first
                    data = b""
                if not data:
                    raise DaemonUnavailable("daemon closed the connection during the handshake")
                welcome = self.protocol.receive_welcome(data)
            if not hello_sent:
                raise DaemonUnavailable("daemon closed the connection during the handshake")
        except TimeoutError as exc:
            sock.close()
            raise Timeout("daemon did not answer the handshake") from exc
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"connection to {self.socket_path} failed: {exc}") from exc
        except ClaifError:
            sock.close()
            raise
        _use_kernel_timeouts(sock, self.timeout)
        self._sock = sock
        return sock

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._demux.reset()

    def _read_frames(self) -> None:
        sock = self._sock
        if sock is None:
            raise DaemonUnavailable("not connected to the daemon")
        try:
            data = sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError) as exc:
            raise Timeout(f"no reply from the daemon within {self.timeout}s") from exc
        except OSError as exc:
            self._drop_connection()
            raise DaemonUnavailable(f"connection to the daemon failed: {exc}") from exc
        if not data:
            self._drop_connection()
            raise DaemonUnavailable("the daemon closed the connection")
        try:
            failure = self._demux.feed(data)
        except ProtocolError:
            self._drop_connection()
            raise
        if failure is not None:
            # A connection-level error; the daemon closes after it.
            self._drop_connection()
            raise failure


def _use_kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Make `sock` blocking with SO_RCVTIMEO/SO_SNDTIMEO doing the timeout.

    A Python-level socket timeout polls before every recv: one more syscall
    and about a third more latency per round trip. The kernel timeout costs
    nothing until it fires, when recv fails with EAGAIN (BlockingIOError).
    """
    sock.settimeout(None)
    if timeout is None:
        return
    seconds = int(timeout)
    micros = int((timeout - seconds) * 1_000_000)
    value = struct.pack("ll", seconds, micros)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
