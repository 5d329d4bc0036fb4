"""gRPC-Web through the gateway: a client written from the wire format (httpx, HTTP/1.1 and
HTTP/2, binary and `-text`) -> gateway with `grpc_web` -> grpcio server over HTTP/2.

Unary and server streaming, statuses and trailing metadata in the trailer frame,
trailers-only answers, the gateway's own errors as statuses the client reads, request
bodies in many pieces, bad base64, memory under an endless body, CORS for browsers, and
the plain gRPC and HTTP traffic beside it left alone."""

import functools
import tracemalloc
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
import trio

from tests.admin_helpers import cancel, nodes, tasks
from tests.grpc_echo import OPTIONS, start_server
from tests.grpc_web_client import (
    ORIGIN,
    call,
    content_type,
    decode_text,
    parse_frames,
    request_body,
    web_config,
)
from tests.helpers import run_gateway, start_upstream


@pytest.fixture
async def gw(echo_server, nursery):
    port, _ = echo_server
    plain = await start_upstream(nursery, "plain")
    async with run_gateway(web_config(port, plain.port)) as gateway:
        gateway.plain = plain
        yield gateway


def edge(gw, path: str) -> str:
    return f"http://127.0.0.1:{gw.listener_ports['edge']}{path}"


def client(http2: bool) -> httpx.AsyncClient:
    # HTTP/2 with prior knowledge (h2c), as a browser speaks HTTP/2 only over TLS.
    return httpx.AsyncClient(http1=not http2, http2=http2, timeout=10)


BOTH = pytest.mark.parametrize(
    ("http2", "text"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["h1-binary", "h1-text", "h2-binary", "h2-text"],
)


def stat(gw, name: str) -> int | None:
    return gw.stats.value(f"http.edge.grpc_web.{name}")


@BOTH
async def test_unary(gw, echo_server, http2, text):
    _, servicer = echo_server
    async with client(http2) as c:
        r = await call(c, edge(gw, "/test.Echo/Unary"), [b"hello web"], text=text)
    assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert r.status == 200
    assert r.headers["content-type"] == (
        "application/grpc-web-text" if text else "application/grpc-web+proto"
    )
    assert r.messages == [b"hello web"]
    assert r.trailers["grpc-status"] == "0" and r.trailers["x-served-by"] == "echo"
    assert "grpc-status" not in r.headers
    # The router treats the bridged call as gRPC: the route timeout (15 s) went upstream
    # as its deadline, as for any gRPC call.
    assert servicer.time_remaining is not None and 10 < servicer.time_remaining <= 15
    assert (stat(gw, "total"), stat(gw, "success"), stat(gw, "failure")) == (1, 1, 0)


async def test_a_binary_call_may_ask_for_a_text_answer(gw):
    """The answer is `-text` when the client's accept asks for it, as Envoy decides."""
    async with client(False) as c:
        r = await call(
            c,
            edge(gw, "/test.Echo/ServerStream"),
            [b"3"],
            headers={"accept": "application/grpc-web-text"},
        )
    # (with the suffix of the client's content type, application/grpc-web+proto)
    assert r.headers["content-type"] == "application/grpc-web-text+proto"
    assert r.messages == [b"0", b"1", b"2"] and r.trailers["grpc-status"] == "0"


@BOTH
async def test_server_streaming(gw, http2, text):
    async with client(http2) as c:
        r = await call(c, edge(gw, "/test.Echo/ServerStream"), [b"300"], text=text)
    assert r.status == 200
    assert r.messages == [str(i).encode() for i in range(300)]
    assert r.trailers["grpc-status"] == "0"


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_a_text_stream_delivers_each_message_as_it_comes(gw, http2):
    """A server stream sends a message every 50 ms: whatever the client has received at any
    moment decodes to whole messages (base64 is held back only inside a message), so
    message "10" (7 bytes, not a multiple of 3) is not kept waiting for message "11"."""
    headers = {"content-type": content_type(True), "accept": content_type(True)}
    body = request_body([b"slow"], text=True)
    received = b""
    async with client(http2) as c:
        url = edge(gw, "/test.Echo/ServerStream")
        async with c.stream("POST", url, content=body, headers=headers) as r:
            async for chunk in r.aiter_raw():
                received += chunk
                messages, _ = parse_frames(decode_text(received))  # fails on a partial one
                if len(messages) >= 13:
                    break
    assert messages[:13] == [str(i).encode() for i in range(13)]


@BOTH
async def test_error_status_and_trailing_metadata(gw, http2, text):
    """grpcio answers an aborted call without messages trailers-only: its status and
    trailing metadata stay in the head, which gRPC-Web clients read; the body is empty."""
    async with client(http2) as c:
        r = await call(c, edge(gw, "/test.Echo/Unary"), [b"fail"], text=text)
    assert r.status == 200
    assert (r.messages, r.trailers) == ([], {})
    assert r.headers["grpc-status"] == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert r.headers["grpc-message"] == "bad input"
    assert r.headers["x-detail"] == "why-it-failed"
    assert r.headers["content-type"] == (
        "application/grpc-web-text" if text else "application/grpc-web+proto"
    )
    assert (stat(gw, "success"), stat(gw, "failure")) == (0, 1)


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_unknown_method_is_unimplemented(gw, http2):
    async with client(http2) as c:
        r = await call(c, edge(gw, "/test.Echo/NoSuchMethod"), text=True)
    assert r.status == 200
    assert r.headers["content-type"] == "application/grpc-web-text"
    assert r.headers["grpc-status"] == "12"
    assert (r.messages, r.trailers) == ([], {})


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_gateway_errors_are_statuses_the_client_reads(gw, http2):
    async with client(http2) as c:
        no_route = await call(c, edge(gw, "/nothing.Here/Call"))
        no_host = await call(c, edge(gw, "/down.Service/Call"), text=True)
        timeout = await call(c, edge(gw, "/test.Echo/Unary"), [b"sleep"], headers={"x-short": "1"})
    assert (no_route.status, no_route.grpc_status) == (200, "12")  # UNIMPLEMENTED
    assert no_route.headers["content-type"] == "application/grpc-web+proto"
    assert (no_host.status, no_host.grpc_status) == (200, "14")  # UNAVAILABLE
    assert no_host.grpc_message == "no healthy upstream"
    assert no_host.headers["content-type"] == "application/grpc-web-text"
    assert (timeout.grpc_status, timeout.grpc_message) == ("4", "upstream request timeout")
    assert gw.stats.value("cluster.echo.upstream_rq_timeout") == 1


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_client_deadline_goes_upstream(gw, echo_server, http2):
    """grpc-web clients send grpc-timeout: it bounds the call and the upstream sees it."""
    _, servicer = echo_server
    async with client(http2) as c:
        r = await call(
            c, edge(gw, "/test.Echo/Unary"), [b"sleep"], headers={"grpc-timeout": "300m"}
        )
    assert (r.grpc_status, r.grpc_message) == ("4", "upstream request timeout")
    assert await trio.to_thread.run_sync(servicer.cancelled.wait, 2), "the upstream call ended"


@BOTH
async def test_route_timeout_mid_stream_ends_with_a_trailer_frame(gw, http2, text):
    """Messages already flowed when the route timeout fires: the client still gets a
    status, in the trailer frame (over HTTP/1.1 too, where plain gRPC is cut)."""
    async with client(http2) as c:
        r = await call(
            c, edge(gw, "/test.Echo/ServerStream"), [b"slow"], text=text, headers={"x-short": "1"}
        )
    assert r.messages[:2] == [b"0", b"1"]
    assert (r.trailers["grpc-status"], r.trailers["grpc-message"]) == (
        "4",
        "upstream request timeout",
    )


async def pieces(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """`body` cut into pieces of `sizes` (cycled), each its own write."""
    pos = i = 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        yield body[pos : pos + size]
        pos += size
        i += 1
        await trio.sleep(0.002)  # so HTTP/1.1 reads them apart too


@BOTH
async def test_request_body_in_many_pieces(gw, http2, text):
    """Messages each padded on their own, sent in pieces that split base64 groups and
    message prefixes: the upstream gets every message whole."""
    messages = [b"x" * n for n in (1, 2, 3, 4, 10, 100)]
    body = request_body(messages, text)
    async with client(http2) as c:
        r = await call(
            c, edge(gw, "/test.Echo/ClientStream"), text=text, body=pieces(body, [1, 3, 2, 7, 5])
        )
    assert r.trailers["grpc-status"] == "0", r.grpc_message
    assert r.messages == [f"{len(messages)}:{sum(map(len, messages))}".encode()]


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize(
    "body",
    [b"AAAA*AAB", b"AAAAAAVoZWxsbw", b"AAAAAAVo ZWxsbw=="],
    ids=["bad-character", "unpadded", "whitespace"],
)
async def test_bad_base64_is_internal(gw, echo_server, http2, body):
    _, servicer = echo_server
    async with client(http2) as c:
        r = await call(c, edge(gw, "/test.Echo/Unary"), text=True, body=body)
        assert (r.status, r.grpc_status) == (200, "13")  # INTERNAL, as Envoy's 400 maps
        assert r.grpc_message == "Bad gRPC-web request, invalid base64 data."
        ok = await call(c, edge(gw, "/test.Echo/Unary"), [b"after"], text=True)
    assert ok.messages == [b"after"], "the connection and the gateway carry on"
    assert stat(gw, "base64_decode_failed") == 1
    assert servicer.time_remaining is not None  # (set by the call that succeeded)


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_bad_base64_after_messages_went_upstream(gw, http2):
    """The body turns bad after some 200 KiB went upstream: the call still ends with the
    status, and the gateway's next call is fine."""
    good = request_body([b"m" * 1000] * 150, text=True)
    async with client(http2) as c:
        r = await call(
            c, edge(gw, "/test.Echo/ClientStream"), text=True, body=pieces(good + b"AA*A", [65536])
        )
        assert (r.status, r.grpc_status) == (200, "13"), r.grpc_message
        ok = await call(c, edge(gw, "/test.Echo/Unary"), [b"after"], text=True)
    assert ok.messages == [b"after"]
    assert stat(gw, "base64_decode_failed") == 1


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_endless_text_body_streams_in_bounded_memory(gw, http2):
    """16 MiB of base64 (12 MiB of messages) to a client-streaming call: decoded and
    forwarded as it comes; what the gateway allocates at once (under 1 MiB when this was
    written) stays far below it."""
    message = bytes(range(256)) * 64  # 16 KiB
    per_piece = request_body([message] * 4, text=True)  # ~87 KiB, four padded frames
    count = 16 * 1024 * 1024 // len(per_piece)

    async def endless():
        for _ in range(count):
            yield per_piece

    async with client(http2) as c:
        await call(c, edge(gw, "/test.Echo/Unary"), text=True)  # warm: connections made
        tracemalloc.start()
        try:
            r = await call(c, edge(gw, "/test.Echo/ClientStream"), text=True, body=endless())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.messages == [f"{4 * count}:{4 * count * len(message)}".encode()]
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at the peak"


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_a_non_grpc_answer_becomes_a_status(gw, http2):
    """An upstream that answers in plain HTTP: its status stays, a grpc-status mapped from
    it goes in the head, and its body is not passed off as messages."""
    async with client(http2) as c:
        unavailable = await call(c, edge(gw, "/status/503"))
        json = await call(c, edge(gw, "/json"), text=True)
    assert (unavailable.status, unavailable.grpc_status) == (503, "14")
    assert unavailable.grpc_message == "non-gRPC response: HTTP 503 Service Unavailable"
    assert unavailable.headers["content-type"] == "application/grpc-web+proto"
    assert (json.status, json.grpc_status, json.messages) == (200, "2", [])  # UNKNOWN
    assert json.headers["content-type"] == "application/grpc-web-text"
    # The upstream saw the request the gateway bridged, as plain gRPC.
    seen = gw.plain.requests[-1].headers
    assert seen["content-type"] == "application/grpc"
    assert seen["te"] == "trailers" and "content-length" not in seen


async def test_cors_preflight_and_exposed_status():
    """What a browser does across origins: the preflight for grpc-web's headers, then the
    call, whose grpc-status the page may read."""
    server, port, _ = start_server()
    try:
        async with run_gateway(web_config(port, 1)) as gw, client(False) as c:
            preflight = await c.options(
                edge(gw, "/test.Echo/Unary"),
                headers={
                    "origin": ORIGIN,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type,x-grpc-web,x-user-agent",
                },
            )
            assert preflight.status_code == 200
            allowed = preflight.headers["access-control-allow-headers"].split(", ")
            assert {"content-type", "x-grpc-web", "x-user-agent"} <= set(allowed)
            assert preflight.headers["access-control-allow-origin"] == ORIGIN
            r = await call(c, edge(gw, "/test.Echo/NoSuchMethod"), headers={"origin": ORIGIN})
            assert r.headers["access-control-allow-origin"] == ORIGIN
            assert r.headers["access-control-expose-headers"] == "grpc-status, grpc-message"
            assert r.grpc_status == "12"
    finally:
        server.stop(grace=None)


async def test_grpc_and_plain_http_beside_it_are_left_alone(gw):
    ch = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
    try:
        unary = ch.unary_unary("/test.Echo/Unary")
        response, c = await trio.to_thread.run_sync(
            functools.partial(unary.with_call, b"plain grpc", timeout=5)
        )
    finally:
        ch.close()
    assert response == b"plain grpc"
    assert ("x-served-by", "echo") in c.trailing_metadata()
    async with client(False) as http:
        r = await http.post(edge(gw, "/json"), content=b"{}", headers={"content-type": "text/x"})
    assert r.status_code == 200 and r.json()["headers"]["content-type"] == "text/x"
    assert "grpc-status" not in r.headers
    assert stat(gw, "total") == 0


async def test_a_body_cut_short_is_not_ended_with_a_status(echo_server, nursery):
    """The route timeout fires while the gateway is blocked writing a big message to a
    client that does not read (HTTP/1.1): part of the message never left, so a trailer
    frame after it would make the client misread the rest. The stream is cut instead."""
    port, _ = echo_server
    plain = await start_upstream(nursery, "plain")
    config = web_config(port, plain.port)
    config.routes()[0]["timeout"] = "1s"  # the x-short route: long enough for the upload
    message = b"m" * (6 * 1024 * 1024)
    body = request_body([message], text=False)
    async with run_gateway(config) as gw:
        sock = trio.socket.socket()
        # A small receive window: the gateway's writes block after a few KiB.
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", gw.listener_ports["edge"]))
        async with trio.SocketStream(sock) as stream:
            head = (
                "POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\nx-short: 1\r\n"
                f"content-type: application/grpc-web+proto\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            await stream.send_all(head.encode() + body)
            await trio.sleep(1.5)  # the timeout fires while the response is mid-way
            received = b""
            with trio.move_on_after(5):
                while chunk := await stream.receive_some(65536):
                    received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in received, "the message had begun (no local reply)"
    assert not received.endswith(b"0\r\n\r\n"), "the body was ended as if whole"
    assert gw.stats.value("cluster.echo.upstream_rq_timeout") == 1


async def test_replies_of_filters_after_and_before_it(echo_server, nursery):
    """A filter after grpc_web sees a gRPC request: its reply is the gRPC status it chose
    (local_ratelimit: RESOURCE_EXHAUSTED). A filter before it answers before grpc_web saw
    the request, in plain HTTP, as in Envoy: gRPC-Web clients map that status themselves."""
    port, _ = echo_server
    plain = await start_upstream(nursery, "plain")
    for chain in (["grpc_web", "rate"], ["rate", "grpc_web"]):
        config = web_config(port, plain.port)
        config.listener("edge", http_filters=chain)
        config.http_filter("rate", "local_ratelimit", max_tokens=1, fill_interval="1h")
        async with run_gateway(config) as gw, client(False) as c:
            assert (await call(c, edge(gw, "/test.Echo/Unary"))).messages == [b"hello"]
            if chain[0] == "grpc_web":
                refused = await call(c, edge(gw, "/test.Echo/Unary"))
                assert (refused.status, refused.grpc_status) == (200, "8")
                assert refused.headers["content-type"] == "application/grpc-web+proto"
                assert (refused.messages, refused.trailers) == ([], {})
            else:
                headers = {"content-type": "application/grpc-web+proto"}
                r = await c.post(edge(gw, "/test.Echo/Unary"), content=b"", headers=headers)
                assert r.status_code == 429 and "grpc-status" not in r.headers


async def test_a_bridged_stream_in_the_task_tree_and_cancelled_from_it(gw):
    """A gRPC-Web server stream shows in /tasks like any stream; the operator's cancel ends
    it with a status in the trailer frame (HTTP/1.1), not a cut connection."""
    headers = {"content-type": content_type(True)}
    body = request_body([b"slow"], text=True)
    received = b""
    async with client(False) as c, httpx.AsyncClient() as admin:
        url = edge(gw, "/test.Echo/ServerStream")
        async with c.stream("POST", url, content=body, headers=headers) as r:
            chunks = r.aiter_raw()
            async for chunk in chunks:
                received += chunk
                if (task := await admin_node(admin, gw)) is not None:
                    break
            assert task["state"] == "streaming response body" and task["cluster"] == "echo"
            assert (await cancel(admin, gw, task["id"])).status_code == 200
            async for chunk in chunks:  # the rest of the same body
                received += chunk
    messages, trailers = parse_frames(decode_text(received))
    assert messages and messages == [str(i).encode() for i in range(len(messages))]
    assert trailers["grpc-status"] == "14"
    assert trailers["grpc-message"] == "stream cancelled by the gateway operator"


async def admin_node(admin: httpx.AsyncClient, gw) -> dict | None:
    found = list(nodes(await tasks(admin, gw), kind="stream", path="/test.Echo/ServerStream"))
    return found[0] if found else None
