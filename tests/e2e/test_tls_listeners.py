"""TLS termination, filter-chain selection by SNI and ALPN, mTLS, handshake failures and
timeouts: real TLS clients (ssl over trio, httpx, curl) against a real gateway."""

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway import open_gateway
from gateway.config import load_config
from gateway.server.reload import reload_from_file
from tests.config_builder import ConfigBuilder, Table, route
from tests.helpers import eventually, run_gateway, start_upstream
from tests.tls_helpers import CertFiles, Pki, http_get, san_names, subject_cn, tls_exchange


async def wait_closed_by_peer(stream: trio.SocketStream) -> None:
    """The peer closed (EOF, or a reset: closing with our bytes unread sends RST), after
    sending whatever it sent first."""
    with trio.fail_after(2):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


def hcm(virtual_host: str, **keys: Any) -> Table:
    """An http_connection_manager network filter serving `virtual_host`."""
    return {"type": "http_connection_manager", "virtual_hosts": [virtual_host], **keys}


def sni_config(pki: Pki, upstream_port: int) -> ConfigBuilder:
    """Listener `edge` picks a filter chain by SNI: api.example.com (direct "api chain"),
    *.web.example.com (direct "web chain"), localhost (to the upstream)."""
    api = pki.issue("api.example.com", common_name="api")
    web = pki.issue("*.web.example.com", common_name="web-wildcard")
    fallback = pki.issue("localhost", common_name="fallback")
    config = ConfigBuilder(admin=False)
    for name, names, certificates, vhost in (
        ("api", ["api.example.com"], [api], "api"),
        ("web", ["*.web.example.com"], [web, fallback], "web"),
        ("localhost", ["localhost"], [fallback], "echo"),
    ):
        config.filter_chain(
            name=name,
            filter_chain_match={"server_names": names},
            tls={"certificates": [c.table() for c in certificates]},
            filters=[hcm(vhost, stat_prefix=vhost)],
        )
    for vhost in ("api", "web"):
        config.virtual_host(vhost, route(direct_response={"status": 200, "body": f"{vhost} chain"}))
    config.virtual_host("echo", route(cluster="echo"))
    config.cluster("echo", upstream_port)
    return config


async def test_sni_selects_the_chain_and_its_certificate(pki, nursery):
    upstream = await start_upstream(nursery)
    async with run_gateway(sni_config(pki, upstream.port)) as gw:
        port = gw.listener_ports["edge"]
        context = pki.client_context()

        api = await tls_exchange(port, "api.example.com", context, http_get())
        assert subject_cn(api.peer_cert) == "api"
        assert api.response.startswith(b"HTTP/1.1 200") and api.response.endswith(b"api chain")

        # A wildcard chain; its first certificate covers the name, so it is the one served.
        web = await tls_exchange(port, "shop.web.example.com", context, http_get())
        assert san_names(web.peer_cert) == ["*.web.example.com"]
        assert web.response.endswith(b"web chain")

        assert gw.stats.value("listener.edge.ssl.handshake") == 2
        assert gw.stats.value("http.api.downstream_rq_total") == 1
        assert gw.stats.value("http.web.downstream_rq_total") == 1


async def test_no_matching_chain_closes_the_connection_and_counts(pki, nursery):
    upstream = await start_upstream(nursery)
    async with run_gateway(sni_config(pki, upstream.port)) as gw:
        port = gw.listener_ports["edge"]
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            await tls_exchange(port, "other.example.org", pki.client_context(), http_get())
        assert gw.stats.value("listener.edge.no_filter_chain_match") == 1
        assert gw.stats.value("listener.edge.ssl.handshake") == 0
        # A plaintext client matches nothing either (every chain wants a server name).
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            await tcp.send_all(http_get())
            await wait_closed_by_peer(tcp)
        assert gw.stats.value("listener.edge.no_filter_chain_match") == 2


async def test_a_client_hello_too_large_to_peek_is_not_waited_for(pki, nursery):
    """A record that announces more than the inspector can peek (2^14 + 1 bytes, over
    RFC 8446's limit) was waited for until listener_filters_timeout (15 s), re-peeked all
    along; it is refused at once (as not TLS, which no chain here takes), while a TLS
    client on another connection is served."""
    upstream = await start_upstream(nursery)
    async with run_gateway(sni_config(pki, upstream.port)) as gw:
        port = gw.listener_ports["edge"]
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        async with stalled:
            await stalled.send_all(b"\x16\x03\x01\x40\x01\x01" + b"\x00" * 100)
            api = await tls_exchange(port, "api.example.com", pki.client_context(), http_get())
            assert api.response.endswith(b"api chain")
            await wait_closed_by_peer(stalled)
        assert gw.stats.value("listener.edge.no_filter_chain_match") == 1
        assert gw.stats.value("listener.edge.downstream_pre_cx_timeout") == 0


async def test_default_chain_takes_what_nothing_else_matches(pki, nursery):
    upstream = await start_upstream(nursery)
    config = sni_config(pki, upstream.port)
    config.listener(default_filter_chain={"filters": [hcm("web", stat_prefix="dflt")]})
    async with run_gateway(config) as gw:
        response = await trio.to_thread.run_sync(
            lambda: httpx.get(f"http://127.0.0.1:{gw.listener_ports['edge']}/")
        )
        assert response.text == "web chain"
        assert gw.stats.value("http.dflt.downstream_rq_total") == 1
        assert gw.stats.value("listener.edge.no_filter_chain_match") == 0


async def test_alpn_h2_gets_http2_and_https_is_forwarded(pki, nursery):
    upstream = await start_upstream(nursery)
    async with run_gateway(sni_config(pki, upstream.port)) as gw:
        base = f"https://localhost:{gw.listener_ports['edge']}"
        async with httpx.AsyncClient(http2=True, verify=pki.client_context()) as client:
            response = await client.get(f"{base}/alpn")
        assert response.http_version == "HTTP/2"
        assert response.json()["headers"]["x-forwarded-proto"] == "https"
        async with httpx.AsyncClient(verify=pki.client_context()) as client:
            response = await client.get(f"{base}/alpn")
        assert response.http_version == "HTTP/1.1"
        assert response.json()["headers"]["x-forwarded-proto"] == "https"
        assert gw.stats.value("http.echo.downstream_cx_http2_total") == 1
        assert gw.stats.value("http.echo.downstream_cx_http1_total") == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl: apt-get install curl")
async def test_curl_resolve_picks_the_chain_by_sni(pki, nursery):
    upstream = await start_upstream(nursery)
    async with run_gateway(sni_config(pki, upstream.port)) as gw:
        port = gw.listener_ports["edge"]

        def curl(host: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["curl", "-sS", "--http2", "--cacert", pki.ca_file, "--resolve",
                 f"{host}:{port}:127.0.0.1", "-w", " %{http_version}", f"https://{host}:{port}/"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip

        api = await trio.to_thread.run_sync(curl, "api.example.com")
        web = await trio.to_thread.run_sync(curl, "a.web.example.com")
        assert api.stdout == "api chain 2", api.stderr
        assert web.stdout == "web chain 2", web.stderr


def mtls_config(pki: Pki, client_ca: str, log: Path) -> ConfigBuilder:
    """Listener `edge` requires client certificates from `client_ca` and logs each client's
    subject and SNI to `log`."""
    access_log = {
        "path": str(log),
        "flush_interval": "0s",
        "text_format": "%DOWNSTREAM_PEER_SUBJECT% sni=%REQUESTED_SERVER_NAME%\n",
    }
    config = ConfigBuilder(admin=False)
    config.filter_chain(
        tls={
            "certificates": [pki.issue("localhost").table()],
            "trusted_ca": client_ca,
            "require_client_certificate": True,
            "alpn_protocols": ["http/1.1"],
        },
        filters=[hcm("main", access_log=[access_log])],
    )
    config.virtual_host("main", route(direct_response={"status": 200, "body": "hello client"}))
    return config


async def test_mtls_rejects_a_client_without_a_certificate(pki, tmp_path):
    clients = Pki(tmp_path)
    log = tmp_path / "access.log"
    async with run_gateway(mtls_config(pki, clients.ca_file, log)) as gw:
        port = gw.listener_ports["edge"]
        # TLS 1.3: the client's handshake ends before the server checks its certificate,
        # so the refusal shows as the connection failing on first use.
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            session = await tls_exchange(port, "localhost", pki.client_context(), http_get())
            assert session.response == b""
            raise trio.BrokenResourceError("closed without an answer")
        await eventually(lambda: gw.stats.value("listener.edge.ssl.fail_verify_no_cert") == 1)

        # A certificate from another CA is refused too.
        stranger = Pki(tmp_path)
        context = pki.client_context()
        wrong = stranger.issue("client.example.com", common_name="stranger")
        context.load_cert_chain(wrong.certificate_chain, wrong.private_key)
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            session = await tls_exchange(port, "localhost", context, http_get())
            assert session.response == b""
            raise trio.BrokenResourceError("closed without an answer")
        await eventually(lambda: gw.stats.value("listener.edge.ssl.fail_verify_error") == 1)

        context = pki.client_context()
        good = clients.issue("client.example.com", common_name="client-1")
        context.load_cert_chain(good.certificate_chain, good.private_key)
        session = await tls_exchange(port, "localhost", context, http_get())
        assert session.response.endswith(b"hello client")
        assert gw.stats.value("listener.edge.ssl.connection_error") == 2
        assert gw.stats.value("listener.edge.ssl.handshake") == 1
    # The verified client's subject and the SNI it asked for, in the access log.
    (line,) = log.read_text().splitlines()
    assert line.startswith("CN=client-1,") and line.endswith(" sni=localhost")


async def test_failed_and_stalled_handshakes_do_not_disturb_others(pki, nursery):
    upstream = await start_upstream(nursery)
    config = sni_config(pki, upstream.port)
    for chain in config.listener()["filter_chains"]:
        chain["tls"]["handshake_timeout"] = "300ms"
    async with run_gateway(config) as gw:
        port = gw.listener_ports["edge"]
        # A ClientHello, then silence: the server answers and waits for the client's Finished.
        hello_bio, _ = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = pki.client_context().wrap_bio(_, hello_bio, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        await stalled.send_all(hello_bio.read())
        # A client that does not trust the certificate aborts its handshake.
        with pytest.raises(trio.BrokenResourceError) as refused:
            await tls_exchange(port, "api.example.com", ssl.create_default_context(), b"")
        assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
        # Meanwhile a good client is served.
        good = await tls_exchange(port, "api.example.com", pki.client_context(), http_get())
        assert good.response.endswith(b"api chain")
        timeouts = "listener.edge.downstream_cx_transport_socket_connect_timeout"
        await eventually(lambda: gw.stats.value(timeouts) == 1)
        await wait_closed_by_peer(stalled)
        assert gw.stats.value("listener.edge.ssl.connection_error") == 2
        assert gw.stats.value("listener.edge.ssl.handshake") == 1
        await stalled.aclose()


async def test_connections_that_never_began_a_request_do_not_hold_the_drain(pki, nursery):
    """A client that opened a connection and said nothing, one byte of a ClientHello, a
    handshake left half way: the drain waits for none of them past the drain grace."""
    upstream = await start_upstream(nursery)
    config = sni_config(pki, upstream.port)
    config.server(drain_timeout="10s", drain_grace="200ms")
    config.listener("plain", virtual_hosts=["api"])
    async with run_gateway(config) as gw:
        silent = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["plain"])
        one_byte = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await one_byte.send_all(b"\x16")
        hello_bio, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = pki.client_context().wrap_bio(out, hello_bio, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        half_way = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await half_way.send_all(hello_bio.read())
        await trio.sleep(0.1)
        start = trio.current_time()
        with trio.fail_after(5):
            await gw.drain()
        assert trio.current_time() - start < 2
        for stream in (silent, one_byte, half_way):
            await wait_closed_by_peer(stream)
            await stream.aclose()


def install(cert: CertFiles, chain: Path, key: Path) -> None:
    """Puts a certificate where the config expects it, as a renewal would."""
    shutil.copyfile(cert.certificate_chain, chain)
    shutil.copyfile(cert.private_key, key)


async def test_a_reload_serves_renewed_certificates_and_keeps_open_connections(
    pki, nursery, tmp_path
):
    upstream = await start_upstream(nursery)
    old = pki.issue("api.example.com", common_name="before")
    chain, key = tmp_path / "api.crt", tmp_path / "api.key"
    install(old, chain, key)
    path = tmp_path / "gateway.toml"
    config = ConfigBuilder()
    certificate = {"certificate_chain": str(chain), "private_key": str(key)}
    config.filter_chain(tls={"certificates": [certificate]}, filters=[hcm("api")])
    config.virtual_host("api", route(cluster="backend"))
    config.cluster("backend", upstream.port)
    path.write_text(config.toml())
    async with open_gateway(load_config(path), str(path)) as gw:
        port = gw.listener_ports["edge"]
        context = pki.client_context()
        # A keep-alive connection opened on the old certificate ...
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        kept = trio.SSLStream(tcp, context, server_hostname="api.example.com")
        await kept.do_handshake()
        assert subject_cn(kept.getpeercert()) == "before"
        # ... the files are renewed in place and the gateway reloaded.
        new = pki.issue("api.example.com", common_name="after")
        install(new, chain, key)
        assert await reload_from_file(gw) == []
        fresh = await tls_exchange(port, "api.example.com", context, http_get())
        assert subject_cn(fresh.peer_cert) == "after"
        # The established connection still works, on its own session.
        await kept.send_all(http_get())
        answer = b""
        while not answer.endswith(b"}") and len(answer) < 100_000:
            data = await kept.receive_some(65536)
            if not data:
                break
            answer += data
        assert answer.startswith(b"HTTP/1.1 200")
        await kept.aclose()
