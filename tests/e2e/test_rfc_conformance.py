"""Conformance leftovers an outside suite found, each checked with a raw-socket client:
absolute-form targets, OPTIONS *, Date, the Trailer header, and a final 4xx that the client
reads instead of a TCP reset."""

import json

import trio

from tests.config_builder import proxy_config, route
from tests.helpers import (
    raw_exchange,
    read_until,
    run_gateway,
    start_scripted_upstream,
    start_upstream,
)


def split(out: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = (line.split(": ", 1) for line in lines[1:])
    return lines[0], {name.lower(): value for name, value in fields}, body


async def test_absolute_form_target_routes_on_its_path_and_authority(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"virtual_hosts": ["app", "main"]})
    config.virtual_host("app", route("/p", cluster="backend"), domains=["app.test"])
    async with run_gateway(config) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"GET HTTP://app.test/p?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        )
    status, _, body = split(out)
    assert status == "HTTP/1.1 200 OK"
    seen = json.loads(body)
    assert (seen["path"], seen["headers"]["host"]) == ("/p?q=1", "app.test")


async def test_options_asterisk_is_forwarded_as_asterisk(nursery):
    heads = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def upstream(stream: trio.SocketStream) -> None:
        async with stream:
            heads.append(await read_until(stream, b"\r\n\r\n"))
            await stream.send_all(b"HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n")

    nursery.start_soon(trio.serve_listeners, upstream, listeners)
    async with run_gateway(proxy_config(listeners[0].socket.getsockname()[1])) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    status, headers, _ = split(out)
    assert status == "HTTP/1.1 200 OK" and headers["allow"] == "GET"
    assert heads[0].startswith(b"OPTIONS * HTTP/1.1\r\n")


async def test_date_on_local_and_forwarded_responses(nursery):
    port, _ = await start_scripted_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    routes = [route("/local", direct_response={"status": 200, "body": "local"})]
    async with run_gateway(proxy_config(port, routes=routes)) as gw:
        for path in (b"/local", b"/forwarded", b"/nowhere-no-upstream-date"):
            out = await raw_exchange(
                gw.listener_ports["edge"],
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            _, headers, _ = split(out)
            assert headers["date"].endswith(" GMT"), (path, headers)


async def test_trailer_header_reaches_the_client(nursery):
    port, _ = await start_scripted_upstream(
        nursery,
        b"HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nx-checksum: 42\r\n\r\n",
    )
    async with run_gateway(proxy_config(port)) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    _, headers, body = split(out)
    assert headers["trailer"] == "x-checksum"
    assert b"x-checksum: 42" in body


async def test_431_is_read_by_the_client_not_lost_to_a_reset(nursery):
    """The client sends a head far over the limit in one go: the gateway answers 431 after
    reading part of it, and closes without destroying the answer with a TCP reset."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port, listener={"max_request_headers_kb": 4})) as gw:
        for _ in range(5):
            stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
            async with stream:
                head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 300_000 + b"\r\n\r\n"
                await stream.send_all(head)
                out = await read_until(stream, b"\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 431 "), out[:100]
    assert up.requests == []


CATCH_ALL_REGEX = route(match={"regex": ".*"}, direct_response={"status": 200, "body": "catch-all"})
#: CONNECT requests go to cluster `tcp` (which a test adds).
CONNECT_ROUTE = route(match={"connect_matcher": True}, cluster="tcp")


async def test_connect_is_refused_unless_a_route_allows_it(nursery):
    """A catch-all regex route does not take CONNECT: 404, and nothing is tunnelled."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port, routes=[CATCH_ALL_REGEX])) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"], b"CONNECT example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert out.startswith(b"HTTP/1.1 404 "), out
    assert up.requests == []


async def test_connect_on_a_connect_matcher_route_is_terminated_into_a_tunnel(nursery):
    from tests.tls_helpers import start_tcp_upstream

    echo = await start_tcp_upstream(nursery)
    config = proxy_config(routes=[CATCH_ALL_REGEX, CONNECT_ROUTE])
    config.cluster("tcp", echo.port)
    async with run_gateway(config) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\nfirst")
            head = await read_until(stream, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"content-length" not in head.lower() and b"transfer-encoding" not in head
            await stream.send_all(b" second")
            await stream.send_eof()  # the upstream answers once our side ends
            reply = head.partition(b"\r\n\r\n")[2]
            with trio.fail_after(3):
                while chunk := await stream.receive_some(100):
                    reply += chunk
    assert reply == b"reply:" + b"first second"[::-1]
    assert echo.received == [b"first second"]


async def test_http2_connect_on_a_connect_matcher_route(nursery):
    import h2.events

    from tests.helpers import RawH2Client
    from tests.tls_helpers import start_tcp_upstream

    echo = await start_tcp_upstream(nursery)
    config = proxy_config(routes=[CONNECT_ROUTE])
    config.cluster("tcp", echo.port)
    async with run_gateway(config) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        async with client.stream:
            client.conn.send_headers(1, [(":method", "CONNECT"), (":authority", "echo.test:7")])
            await client.flush()
            events = await client.read_until(lambda e: isinstance(e, h2.events.ResponseReceived))
            assert dict(events[-1].headers)[b":status"] == b"200"
            client.conn.send_data(1, b"over h2", end_stream=True)
            await client.flush()
            events = await client.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == b"reply:" + b"over h2"[::-1]
