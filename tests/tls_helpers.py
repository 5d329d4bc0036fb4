"""TLS pieces for the listener and cluster TLS tests: a trustme CA with certificate files
on disk, a few TLS and raw TCP upstreams, and small clients that show what they saw
(the certificate, the negotiated ALPN)."""

import ssl
from pathlib import Path

import attrs
import trio
import trustme


@attrs.define
class CertFiles:
    certificate_chain: str
    private_key: str

    def table(self) -> dict[str, str]:
        """A `certificates` entry (or a cluster's `certificate`) for the config builder."""
        return attrs.asdict(self)


@attrs.define
class Pki:
    """A CA and the files made from it, under one directory."""

    directory: Path
    ca: trustme.CA = attrs.Factory(trustme.CA)
    ca_file: str = ""

    def __attrs_post_init__(self) -> None:
        self.ca_file = str(self.directory / f"ca-{id(self)}.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(self, *names: str, common_name: str | None = None) -> CertFiles:
        cert = self.ca.issue_cert(*names, common_name=common_name)
        stem = self.directory / f"{(common_name or names[0]).replace('*', 'star')}-{id(cert)}"
        chain, key = f"{stem}.crt", f"{stem}.key"
        Path(chain).write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(key)
        return CertFiles(chain, key)

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


@attrs.define
class TlsSession:
    """What a client learned from a handshake, and the bytes it got back."""

    peer_cert: dict
    alpn: str | None
    response: bytes


def subject_cn(cert: dict) -> str:
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


def san_names(cert: dict) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


async def tls_exchange(
    port: int,
    server_name: str,
    context: ssl.SSLContext,
    request: bytes,
    *,
    half_close: bool = False,
    timeout: float = 3.0,
) -> TlsSession:
    """Connects to 127.0.0.1:port with SNI `server_name`, sends `request`, reads until
    the peer closes (or `timeout`)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname=server_name, https_compatible=True)
    async with stream:
        await stream.do_handshake()
        session = TlsSession(stream.getpeercert(), stream.selected_alpn_protocol(), b"")
        await stream.send_all(request)
        with trio.move_on_after(timeout):
            while chunk := await stream.receive_some(65536):
                session.response += chunk
        return session


def http_get(path: str = "/", host: str = "x") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


@attrs.define
class TlsEchoUpstream:
    """A TLS server that records the SNI and ALPN of each handshake and echoes bytes."""

    port: int = 0
    server_names: list[str | None] = attrs.Factory(list)
    alpns: list[str | None] = attrs.Factory(list)


async def start_tls_echo_upstream(
    nursery: trio.Nursery, cert: CertFiles, *, client_ca: str | None = None
) -> TlsEchoUpstream:
    upstream = TlsEchoUpstream()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.certificate_chain, cert.private_key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED

    def on_sni(obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        upstream.server_names.append(name)

    context.sni_callback = on_sni

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True, https_compatible=True)
        async with stream:
            try:
                await stream.do_handshake()
                upstream.alpns.append(stream.selected_alpn_protocol())
                while data := await stream.receive_some(65536):
                    await stream.send_all(b"echo:" + data)
            except trio.BrokenResourceError:
                return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream


@attrs.define
class TcpUpstream:
    """A raw TCP upstream. Each connection reads until EOF, records what it got, then
    sends back `reply` + the bytes reversed and closes; or, with `hold`, sends nothing
    and keeps the connection to watch how it ends."""

    port: int = 0
    received: list[bytes] = attrs.Factory(list)
    eof_at: list[float] = attrs.Factory(list)
    closed_by_peer_at: list[float] = attrs.Factory(list)
    connections: int = 0
    hold: bool = False

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        data = b""
        async with stream:
            try:
                while chunk := await stream.receive_some(65536):
                    data += chunk
            except trio.BrokenResourceError:
                pass
            self.eof_at.append(trio.current_time())
            self.received.append(data)
            if not self.hold:
                await stream.send_all(b"reply:" + data[::-1])
                return
            # The peer half-closed; find out when it is gone for good.
            with trio.move_on_after(5):
                try:
                    while True:
                        await stream.send_all(b".")
                        await trio.sleep(0.01)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.closed_by_peer_at.append(trio.current_time())


async def start_tcp_upstream(nursery: trio.Nursery, **kwargs: object) -> TcpUpstream:
    upstream = TcpUpstream(**kwargs)  # type: ignore[arg-type]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, upstream.handle, listeners)
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream
