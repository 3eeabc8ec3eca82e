"""`metrics.listen`: GET /metrics and GET /health over HTTP, for Prometheus
and load balancers (off by default; loopback unless configured otherwise).

HTTP/1.1 with h11 (already a dependency, through httpx and the simulator)
on an anyio TCP listener in the daemon's task group: two read-only routes
do not justify a web framework. Keep-alive is honoured; a request line and
headers over 16 KiB, or a connection silent for 30 s, is closed. Changing
`metrics.listen` at run time closes the old listener and opens the new one.

    GET /metrics   200, the Prometheus text exposition (as `claif metrics`)
    GET /health    200 when healthy or warning, 503 when unhealthy; the
                   JSON document `claif health --json` prints
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec
import structlog

from .monitoring import CONTENT_TYPE

__all__ = ["MetricsHTTP", "parse_listen"]

log = structlog.get_logger("claifd.metrics_http")

MAX_HEAD = 16 * 1024
IDLE_TIMEOUT = 30.0


def parse_listen(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) for "127.0.0.1:9464" ("[::1]:9464" for IPv6); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return host.strip("[]"), int(port)


class MetricsHTTP:
    def __init__(self, metrics: Callable[[], str], health: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.metrics = metrics
        self.health = health
        # "HOST:PORT" actually listened on (the port resolved when 0), or None.
        self.address: str | None = None
        self._wanted = ""
        self._scope: anyio.CancelScope | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._opened = anyio.Event()
        self.served = 0

    def __repr__(self) -> str:
        return f"<MetricsHTTP {self.address or 'off'} served={self.served}>"

    async def start(self, task_group: anyio.abc.TaskGroup, listen: str) -> None:
        self._task_group = task_group
        self.want(listen)
        if listen:
            await self._opened.wait()

    def want(self, listen: str) -> None:
        """Listen on `listen` ("" stops): the old listener closes at once, the
        new one opens a moment later (`address` says when)."""
        if listen == self._wanted:
            return
        self._wanted = listen
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            log.info("metrics endpoint closed", address=self.address)
            self.address = None
        if listen and self._task_group is not None:
            self._opened = anyio.Event()
            scope = self._scope = anyio.CancelScope()
            self._task_group.start_soon(self._open, listen, scope)

    async def _open(self, listen: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                host, port = parse_listen(listen)
                listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            except (OSError, ValueError) as exc:
                log.error("cannot serve metrics", listen=listen, error=str(exc))
                self._opened.set()
                return
            self.address = f"{host}:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
            log.info("serving metrics", address=self.address)
            self._opened.set()
            await self._serve(listener)

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with stream:
                while True:
                    request = await self._next_request(conn, stream)
                    if request is None:
                        return
                    await self._respond(conn, stream, request)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
        except (h11.ProtocolError, anyio.BrokenResourceError, anyio.EndOfStream, OSError, TimeoutError):
            return

    async def _next_request(self, conn: h11.Connection, stream: anyio.abc.SocketStream) -> h11.Request | None:
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with anyio.fail_after(IDLE_TIMEOUT):
                    try:
                        data = await stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _respond(self, conn: h11.Connection, stream: anyio.abc.SocketStream, request: h11.Request) -> None:
        path = request.target.decode("latin-1").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, "text/plain", b"only GET\n"
        elif path == "/metrics":
            status, ctype, body = 200, CONTENT_TYPE, self.metrics().encode()
        elif path == "/health":
            doc = await self.health()
            status = 503 if doc["status"] == "unhealthy" else 200
            ctype, body = "application/json", msgspec.json.encode(doc)
        else:
            status, ctype, body = 404, "text/plain", b"GET /metrics or GET /health\n"
        self.served += 1
        headers = [("content-type", ctype), ("content-length", str(len(body))), ("cache-control", "no-store")]
        await stream.send(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if request.method != b"HEAD":
            await stream.send(conn.send(h11.Data(data=body)) or b"")
        await stream.send(conn.send(h11.EndOfMessage()) or b"")
