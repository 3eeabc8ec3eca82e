"""The real network around the upstream lanes: forward proxies (from the
environment or `pool.proxy`, http upstreams forwarded and https ones through
CONNECT, NO_PROXY, credentials), company CAs (`pool.ca_file`), client
certificates (`pool.client_cert`) and certificate failures (`tls_error`,
never retried). Each against a real server on loopback: a small forward
proxy of the tests' own and TLS servers with trustme certificates.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trustme

from claif_client import Client, TlsError

from .conftest import DaemonProcess, Sim
from .test_transports import in_thread, make_pool, post, raw_server, read_request

USER, PASSWORD = "proxyuser", "s3cret-proxy-pass"


class ForwardProxy:
    """An HTTP forward proxy: CONNECT tunnels, and absolute-form requests
    forwarded one per connection. `seen` lists (method, target, credentials)."""

    def __init__(self, credentials: str | None = None) -> None:
        self.credentials = credentials
        self.seen: list[tuple[str, str, str | None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        auth = headers.get("proxy-authorization")
        self.seen.append((method, target, auth))
        if self.credentials and auth != "Basic " + base64.b64encode(self.credentials.encode()).decode():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # http://host:port/path: to origin form, one request on this connection
            rest = target.split("://", 1)[1]
            hostport, _, path = rest.partition("/")
            host, _, port = hostport.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            kept = [line for line in lines[1:] if line and not line.lower().startswith(("proxy-", "connection:"))]
            up_writer.write("\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "connection: close", "", ""])
                            .encode("latin-1"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def forward_proxy(credentials: str | None = None) -> AsyncIterator[tuple[ForwardProxy, str]]:
    proxy = ForwardProxy(credentials)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    userinfo = f"{credentials}@" if credentials else ""
    try:
        yield proxy, f"http://{userinfo}127.0.0.1:{port}"
    finally:
        server.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return authority


def server_tls(ca: trustme.CA, want_client_cert: bool = False) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    if want_client_cert:
        ca.configure_trust(tls)
        tls.verify_mode = ssl.CERT_REQUIRED
        # TLS 1.2: a missing client certificate fails the handshake itself, with
        # an alert (under 1.3 the server says so after it, often as a reset).
        tls.maximum_version = ssl.TLSVersion.TLSv1_2
    return tls


@contextmanager
def blocking_tls_server(tls: ssl.SSLContext) -> Iterator[str]:
    """An echo server on the ssl module's blocking sockets, in a thread: a
    failed handshake is answered with its alert, as nginx does (asyncio's
    TLS server just closes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with tls.wrap_socket(raw, server_side=True) as conn:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += conn.recv(65536)
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    body = head.split(b"\r\n\r\n", 1)[1]
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
                                 + body)
            except (OSError, ValueError, IndexError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ------------------------------------------------------------------ proxies


def test_an_http_upstream_goes_through_the_environments_proxy(sim: Sim,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        async with forward_proxy() as (proxy, url):
            monkeypatch.setenv("HTTP_PROXY", url)  # loopback is not exempt: NO_PROXY does not name it
            pool = make_pool()
            assert pool.stats()["proxy"] == f"environment: HTTP_PROXY={url}"
            for _ in range(2):
                status, body = await post(pool, sim.url + "/v1/chat/completions")
                assert status == 200 and b"Simulated reply to: hi lane" in body
            await pool.aclose()
            assert [(m, t) for m, t, _ in proxy.seen] == [("POST", sim.url + "/v1/chat/completions")] * 2

    asyncio.run(run())


def test_an_https_upstream_goes_through_connect_with_credentials(ca: trustme.CA, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        async with raw_server(_echo, tls=server_tls(ca)) as url, \
                forward_proxy(f"{USER}:{PASSWORD}") as (proxy, proxy_url):
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            pool = make_pool(ca_file=str(tmp_path / "ca.pem"))
            assert PASSWORD not in str(pool.stats()["proxy"]) and USER in str(pool.stats()["proxy"])
            assert await post(pool, url + "/echo", b"through the tunnel") == (200, b"through the tunnel")
            assert await post(pool, url + "/echo", b"again") == (200, b"again")
            await pool.aclose()
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            assert proxy.seen == [("CONNECT", url.removeprefix("https://"), expected)]  # one tunnel, kept alive

    asyncio.run(run())


def test_no_proxy_and_pool_proxy_decide_over_the_environment(sim: Sim,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        async with forward_proxy() as (proxy, url), forward_proxy() as (other, other_url):
            monkeypatch.setenv("HTTP_PROXY", url)
            monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
            pool = make_pool()
            assert (await post(pool, sim.url + "/v1/chat/completions"))[0] == 200
            await pool.aclose()
            assert proxy.seen == []  # NO_PROXY names the host: direct
            pool = make_pool(proxy=other_url)  # pool.proxy overrides the environment, NO_PROXY too
            assert (await post(pool, sim.url + "/v1/chat/completions"))[0] == 200
            await pool.aclose()
            assert proxy.seen == [] and len(other.seen) == 1
            monkeypatch.delenv("NO_PROXY")
            pool = make_pool(proxy="")  # "" means none, whatever the environment says
            assert pool.stats()["proxy"] == "none"
            assert (await post(pool, sim.url + "/v1/chat/completions"))[0] == 200
            await pool.aclose()
            assert proxy.seen == [] and len(other.seen) == 1

    asyncio.run(run())


def test_the_daemon_uses_its_environments_proxy_and_redacts_it(daemon_factory, sim: Sim) -> None:  # type: ignore[no-untyped-def]
    with in_thread(forward_proxy(f"{USER}:{PASSWORD}")) as (proxy, url):
        d: DaemonProcess = daemon_factory(env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": url,
                                                "CLAIF_PROVIDERS__OPENAI__BASE_URL": sim.url + "/v1",
                                                "OPENAI_API_KEY": "sk-test-proxy-0000"})
        with Client(d.socket) as c:
            assert c.complete("via the proxy", model="openai/gpt-4o-mini").text == "Simulated reply to: via the proxy"
            shown = c.status()["pool"]["proxy"]
            assert PASSWORD not in shown and "HTTP_PROXY=http://proxyuser:***@127.0.0.1" in shown, shown
            c.config_set("pool.proxy", f"http://{USER}:{PASSWORD}@127.0.0.1:9")
            assert PASSWORD not in str(c.config_get("pool.proxy")) and PASSWORD not in c.status()["pool"]["proxy"]
        assert "POST" in [m for m, _, _ in proxy.seen]  # (and the health probe's GET)
        assert PASSWORD not in d.log_path.read_text()


# --------------------------------------------------------------------- TLS


def test_a_company_ca_from_pool_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    async def run() -> None:
        async with raw_server(_echo, tls=server_tls(ca)) as url:
            pool = make_pool()  # the default store alone does not know the CA
            with pytest.raises(Exception) as refused:
                await post(pool, url + "/echo", b"x")
            assert "UpstreamTLSError" in type(refused.value).__name__ and "127.0.0.1" in str(refused.value)
            await pool.aclose()
            pool = make_pool(ca_file=str(tmp_path / "ca.pem"))
            assert await post(pool, url + "/echo", b"trusted") == (200, b"trusted")
            await pool.aclose()
            pool = make_pool(verify=False)
            assert await post(pool, url + "/echo", b"unchecked") == (200, b"unchecked")
            await pool.aclose()

    asyncio.run(run())


def test_a_client_certificate_for_mtls(ca: trustme.CA, tmp_path: Path) -> None:
    mine = ca.issue_cert("claifd@example.com")
    mine.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))

    async def run() -> None:
        with blocking_tls_server(server_tls(ca, want_client_cert=True)) as url:
            pool = make_pool(ca_file=str(tmp_path / "ca.pem"), client_cert=str(tmp_path / "client.pem"))
            assert await post(pool, url + "/echo", b"mutual") == (200, b"mutual")
            await pool.aclose()
            pool = make_pool(ca_file=str(tmp_path / "ca.pem"))  # no certificate of ours
            with pytest.raises(Exception) as refused:
                await post(pool, url + "/echo", b"x")
            await pool.aclose()
            assert "UpstreamTLSError" in type(refused.value).__name__, repr(refused.value)

    asyncio.run(run())


def test_a_refused_certificate_is_tls_error_never_retried(daemon_factory, ca: trustme.CA) -> None:  # type: ignore[no-untyped-def]
    connections = 0

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _echo(reader, writer)

    with in_thread(raw_server(counted, tls=server_tls(ca))) as url:
        d: DaemonProcess = daemon_factory(env={"CLAIF_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
                                                "OPENAI_API_KEY": "sk-test-tls-00000000"})
        with Client(d.socket) as c:
            with pytest.raises(TlsError) as refused:
                c.complete("hello", model="openai/gpt-4o-mini")
            assert refused.value.code == "tls_error"
            assert "127.0.0.1" in str(refused.value) and "certificate" in str(refused.value)
            assert c.status()["upstream"]["retries"] == 0
            checks = {check["name"]: check for check in c.health()["checks"]}
            assert checks["provider:openai"]["status"] == "unhealthy"
            assert "tls_error" in checks["provider:openai"]["detail"], checks["provider:openai"]
        assert connections <= 2  # the call's one attempt (and the health probe's), never 4
        assert any(line.get("event") == "TLS failure" for line in d.logs())


def test_a_ca_file_that_does_not_load_is_refused_with_the_change(daemon: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with Client(daemon.socket) as c:
        for path, says in ((tmp_path / "missing.pem", "No such file"), (tmp_path / "broken.pem", "pool.ca_file")):
            with pytest.raises(Exception, match="pool.ca_file") as refused:
                c.config_set("pool.ca_file", str(path))
            assert says in str(refused.value)
        assert c.config_get("pool.ca_file")["value"] == ""
        assert c.complete("still serving").text == "echo: still serving"
