"""Upstreams that break HTTP/1.1 framing on purpose: nothing they send past the end of a
response may reach another client (response poisoning), and their connections are closed
and counted, never lent again."""

import httpx
import pytest
import trio

from tests.config_builder import proxy_config
from tests.helpers import eventually, run_gateway, url

_POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED"
_FINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"

#: What the upstream answers per request line: a response and the bytes it writes past it.
_ANSWERS = {
    b"GET /extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + _POISON,
    b"GET /no-content": b"HTTP/1.1 204 No Content\r\n\r\n" + _POISON,
    b"GET /not-modified": b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n' + _POISON,
    b"HEAD /head": b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED",
}


async def start_poisoning_upstream(nursery: trio.Nursery, late: bool) -> int:
    """A keep-alive upstream that answers `_ANSWERS` (with the extra bytes in the same write,
    or `late`, a moment after the response) and every other request with "fine"."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def answer(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            line = head.split(b" HTTP/")[0]
            answer = _ANSWERS.get(line, _FINE)
            if late and answer is not _FINE:
                cut = answer.index(b"POISONED") if line.startswith(b"HEAD") else -len(_POISON)
                await stream.send_all(answer[:cut])
                await trio.sleep(0.05)
                await stream.send_all(answer[cut:])
            else:
                await stream.send_all(answer)

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await answer(stream)
            except trio.BrokenResourceError:
                pass  # the gateway closed a connection it will not trust again

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize("late", [False, True], ids=["same-write", "late"])
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/extra", 200),
        ("GET", "/no-content", 204),
        ("GET", "/not-modified", 304),
        ("HEAD", "/head", 200),
    ],
)
async def test_bytes_past_a_response_never_reach_the_next_client(
    nursery, method, path, status, late
):
    port = await start_poisoning_upstream(nursery, late)
    # One connection to the upstream, so a poisoned one would be lent to the very next request.
    toml = proxy_config(port, cluster={"max_connections_per_host": 1})
    async with run_gateway(toml) as gw, httpx.AsyncClient() as victim:
        async with httpx.AsyncClient() as attacker:
            r = await attacker.request(method, url(gw, path))
            assert r.status_code == status
            assert b"POISONED" not in r.content
        if late:
            await trio.sleep(0.1)  # the extra bytes arrive while the connection idles
        for _ in range(5):
            r = await victim.get(url(gw, "/victim"))
            assert (r.status_code, r.text) == (200, "fine")
        # The poisoned connection was closed (counted as a protocol error when the bytes
        # came with the response; found readable when idle otherwise), never lent again.
        stat = "upstream_cx_idle_timeout" if late else "upstream_cx_protocol_error"
        await eventually(lambda: gw.stats.value(f"cluster.backend.{stat}") >= 1)
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 2
