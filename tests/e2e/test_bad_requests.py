"""Bad input gets the right 4xx and a closed connection, and never reaches the upstream."""

import pytest
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import (
    eventually,
    raw_exchange,
    read_until,
    run_gateway,
    start_upstream,
)

SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "unknown transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
    ),
    "transfer-encoding list": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
    ),
    "transfer-encoding with space before colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "content-length list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "bare LF line endings": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare LF inside head": b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "NUL in header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bare CR in header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "several Host headers": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "missing Host": b"GET / HTTP/1.1\r\n\r\n",
    "oversized chunk size": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"
    ),
    "malformed request line": b"GET /\r\n\r\n",
    "garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_ambiguous_or_malformed_request_is_rejected(nursery, raw):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        # A well-formed request follows on the same connection: it must never be served.
        out = await raw_exchange(
            gw.listener_ports["edge"], raw + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert out.count(b"HTTP/1.1") == 1, "the connection must close after the 400"
    assert [r.path for r in up.requests if r.path != "/"] == []
    assert not any("smuggled" in r.path for r in up.requests)


async def test_oversized_head_gets_431(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"max_request_headers_kb": 4})
    async with run_gateway(config) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
        )
    assert out.startswith(b"HTTP/1.1 431 ")
    assert up.requests == []


async def test_too_many_headers_gets_431(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"max_request_headers_count": 10})
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
    async with run_gateway(config) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"], b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
        )
    assert out.startswith(b"HTTP/1.1 431 ")
    assert up.requests == []


async def test_head_that_never_ends_gets_431_across_reads(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"max_request_headers_kb": 4})
    async with run_gateway(config) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with trio.fail_after(3):
                try:
                    for _ in range(16):  # one header line, 1 KiB a write, never ended
                        await trio.sleep(0.01)
                        await stream.send_all(b"a" * 1024)
                except trio.BrokenResourceError:
                    pass
                out = await read_until(stream, b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    assert up.requests == []


async def test_pipelined_requests_in_one_write_are_all_served(nursery):
    """Head bytes count from where each head starts, not from the start of the read: 10,000
    small requests in one write are no oversized head."""
    routes = [route("/direct", direct_response={"status": 200, "body": "d"})]
    async with run_gateway(proxy_config(routes=routes)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET /direct HTTP/1.1\r\nHost: x\r\n\r\n" * 10_000)
            out = b""
            with trio.fail_after(20):
                while out.count(b"HTTP/1.1 ") < 10_000:
                    chunk = await stream.receive_some(1 << 20)
                    assert chunk, out[-300:]
                    out += chunk
    assert out.count(b"HTTP/1.1 200 OK") == 10_000


async def test_large_body_then_the_start_of_the_next_request_in_one_read(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            head = b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 65000\r\n\r\n"
            await stream.send_all(head + b"b" * 65000 + b"GET /next HTT")
            await trio.sleep(0.05)
            await stream.send_all(b"P/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                out = b""
                while out.count(b"HTTP/1.1 200 OK") < 2:
                    chunk = await stream.receive_some(65536)
                    assert chunk, out
                    out += chunk
    assert b"65000" in out
    assert [r.path for r in up.requests] == ["/next"]


async def test_malformed_chunked_body_mid_stream_gets_400(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\nzz\r\n",
        )
        assert out.startswith(b"HTTP/1.1 400 ")
        await eventually(lambda: gw.stats.value("cluster.backend.upstream_cx_active") == 0)


async def test_slowloris_gets_408(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"request_headers_timeout": "200ms"})
    async with run_gateway(config) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            out = b""
            with trio.fail_after(3):
                for _ in range(5):  # keep trickling: the deadline runs from the first byte
                    await trio.sleep(0.1)
                    try:
                        await stream.send_all(b"X-Slow: 1\r\n")
                    except trio.BrokenResourceError:
                        break
                while chunk := await stream.receive_some(1000):
                    out += chunk
            elapsed = trio.current_time() - start
        assert out.startswith(b"HTTP/1.1 408 ")
        assert elapsed < 1.5
        assert gw.stats.value("http.edge.downstream_rq_header_timeout") == 1
    assert up.requests == []


async def test_idle_keep_alive_connection_is_closed(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"idle_timeout": "200ms"})
    async with run_gateway(config) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            out = b""
            with trio.fail_after(3):
                while chunk := await stream.receive_some(65536):
                    out += chunk
        assert out.startswith(b"HTTP/1.1 200 OK")
        assert gw.stats.value("http.edge.downstream_cx_idle_timeout") == 1
