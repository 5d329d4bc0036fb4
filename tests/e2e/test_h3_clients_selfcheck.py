"""tests/h3_clients.py against an HTTP/3 server that is not the gateway: hypercorn, serving
QUIC (aioquic underneath) and TLS over TCP with Alt-Svc. What passes here is the clients'
behaviour, so a gateway test that fails with them points at the gateway.

hypercorn 0.18's HTTP/3 cannot check the rest: it sends DATA after response trailers (aioquic
refuses), fails on request trailers, and drops a WebSocket stream before the client's FIN
arrives (KeyError in H3Protocol.handle). Trailers and WebSocket over HTTP/3 were checked by
hand against a qh3 server and by reading RFC 9220; the gateway's tests check them for good."""

import json
from functools import partial
from pathlib import Path
from typing import get_args

import hypercorn.config
import pytest
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.trio.run import worker_serve

from gateway.admin.asgi import Receive, Scope, Send
from tests.h3_clients import (
    Departure,
    H3ConnectionClosed,
    H3Peer,
    H3Request,
    h3_abandon,
    h3_request,
    h3_requests,
    niquests_follow_alt_svc,
    niquests_h3_request,
)
from tests.tls_helpers import Pki


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """/stream sends 1 KiB every 20 ms until the client leaves; /headers answers the request
    headers as JSON; anything else answers the request body, with x-method, x-path and
    x-body-length."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/stream":
        # Answers without reading the body: hypercorn's HTTP/3 ignores RESET_STREAM, and an
        # app left reading a reset stream fails when the server stops.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await trio.sleep(0.02)
    body = bytearray()  # bytes += would copy the whole body per DATA frame
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if path == "/headers":
        headers = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(headers).encode()})
        return
    response_headers = [
        (b"x-method", scope["method"].encode()),
        (b"x-path", path.encode()),
        (b"x-body-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    await send({"type": "http.response.body", "body": bytes(body)})


@pytest.fixture
async def servers(tmp_path: Path, nursery: trio.Nursery) -> tuple[H3Peer, H3Peer]:
    """hypercorn on QUIC and on TLS over TCP; the peers for each (same CA, same name)."""
    pki = Pki(tmp_path)
    cert = pki.issue("localhost")
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.quic_bind = ["127.0.0.1:0"]
    config.certfile, config.keyfile = cert.certificate_chain, cert.private_key
    config.accesslog = None
    config.graceful_timeout = 0.1
    # Made here, not by hypercorn.trio.serve: its task status names the TCP binds only,
    # and the test needs the UDP port too.
    sockets = config.create_sockets()
    for sock in sockets.secure_sockets:
        sock.listen(16)
    # The admin ASGI types are plain dicts; hypercorn's are TypedDicts.
    app = ASGIWrapper(echo_app)  # type: ignore[arg-type]
    await nursery.start(partial(worker_serve, app, config, sockets=sockets))
    quic_port = sockets.quic_sockets[0].getsockname()[1]
    tcp_port = sockets.secure_sockets[0].getsockname()[1]
    return H3Peer(quic_port, pki.ca_file), H3Peer(tcp_port, pki.ca_file)


async def test_request_with_a_body(servers: tuple[H3Peer, H3Peer]) -> None:
    peer, _ = servers
    body = bytes(range(256)) * 4096  # 1 MiB: 10 MiB takes 10 s with Python at both ends
    response = await h3_request(peer, H3Request("POST", "/echo", body=body))
    assert response.status == 200 and response.complete
    assert response.header("x-method") == "POST"
    assert response.header("x-body-length") == str(len(body))
    assert response.body == body


async def test_headers_arrive(servers: tuple[H3Peer, H3Peer]) -> None:
    peer, _ = servers
    response = await h3_request(peer, H3Request(path="/headers", headers=[("x-a", "1")]))
    assert ["x-a", "1"] in json.loads(response.body)


async def test_hundred_streams_on_one_connection(servers: tuple[H3Peer, H3Peer]) -> None:
    peer, _ = servers
    requests = [H3Request("POST", f"/echo/{i}", body=b"%d" % i) for i in range(100)]
    responses = await h3_requests(peer, requests)
    assert [r.body for r in responses] == [b"%d" % i for i in range(100)]
    assert [r.header("x-path") for r in responses] == [f"/echo/{i}" for i in range(100)]


@pytest.mark.parametrize("how", get_args(Departure))
async def test_abandon_mid_response(servers: tuple[H3Peer, H3Peer], how: Departure) -> None:
    peer, _ = servers
    partial = await h3_abandon(peer, H3Request(path="/stream"), at="response", how=how)
    assert partial.status == 200 and not partial.complete and partial.body


async def test_abandon_mid_request(servers: tuple[H3Peer, H3Peer]) -> None:
    peer, _ = servers
    partial = await h3_abandon(
        peer, H3Request("POST", "/stream", body=b"x" * 100_000), at="request", how="reset"
    )
    assert not partial.complete


async def test_untrusted_certificate_fails_the_handshake(
    servers: tuple[H3Peer, H3Peer], tmp_path: Path
) -> None:
    peer, _ = servers
    stranger = H3Peer(peer.port, Pki(tmp_path).ca_file)
    with pytest.raises(H3ConnectionClosed):
        await h3_request(stranger, H3Request(path="/headers"))


async def test_niquests_over_http3(servers: tuple[H3Peer, H3Peer]) -> None:
    peer, _ = servers
    response = await niquests_h3_request(peer, "POST", "/echo", body=b"ping")
    assert (response.status, response.http_version, response.body) == (200, 30, b"ping")


async def test_niquests_follows_alt_svc(servers: tuple[H3Peer, H3Peer]) -> None:
    _, tcp = servers
    responses = await niquests_follow_alt_svc(tcp, "/echo")
    assert [r.http_version for r in responses] == [20, 30, 30]
