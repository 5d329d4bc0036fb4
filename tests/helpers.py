"""Real upstreams, real gateways, real sockets: the pieces every end-to-end test uses."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import trio

from gateway import Gateway, loads_config, open_gateway
from gateway.admin.asgi import Receive, Scope, Send, complete_lifespan, count_body
from tests.config_builder import ConfigBuilder


@attrs.define
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class Upstream:
    """A hypercorn-served ASGI app that records what it saw and when clients left.

    Paths: /status/N answers N with no body; /slow?delay=S sleeps then answers;
    /hang never answers and records the disconnect; /stream sends a chunk every 20 ms until
    the client leaves; /big?size=N sends N bytes; anything else echoes the request as JSON.
    """

    name: str = "upstream"
    port: int = 0
    requests: list[SeenRequest] = attrs.Factory(list)
    disconnects: list[float] = attrs.Factory(list)
    disconnected: trio.Event = attrs.Factory(trio.Event)
    first_chunk: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        path = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = b""
        if path == "/discard":  # count the body without keeping it
            await self._respond(send, str(await count_body(receive)).encode())
            return
        if path != "/hang-before-body":
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self._left()
                    return
                body += message.get("body", b"")
                if body:
                    self.first_chunk.set()
                if not message.get("more_body"):
                    break
        raw_path = scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        self.requests.append(SeenRequest(scope["method"], raw_path, headers, body))
        if path.startswith("/status/"):
            status = int(path.rpartition("/")[2])
            extra = [(b"etag", b'"x"')] if status == 304 else []
            await send({"type": "http.response.start", "status": status, "headers": extra})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            await trio.sleep(float(query.get("delay", "1")))
            await self._respond(send, b"slow done")
        elif path in ("/hang", "/hang-before-body"):
            await self._wait_disconnect(receive)
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wait_disconnect_then_cancel, receive, nursery)
                await self.release.wait()
                await send({"type": "http.response.body", "body": b"second\n"})
                nursery.cancel_scope.cancel()
        elif path == "/json-stream":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            for i in range(50):
                await send(
                    {"type": "http.response.body", "body": b'{"n": %d}\n' % i, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b""})
        elif path == "/big":
            size = int(query.get("size", "1000000"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            chunk = b"x" * 65536
            sent = 0
            while sent < size:
                piece = chunk[: size - sent]
                sent += len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            payload = {
                "server": self.name,
                "method": scope["method"],
                "path": raw_path,
                "headers": headers,
                "body_bytes": len(body),
            }
            extra = [(b"x-upstream", self.name.encode()), (b"content-type", b"application/json")]
            await self._respond(send, json.dumps(payload).encode(), extra)

    async def _respond(
        self, send: Send, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        start_headers = [(b"content-length", str(len(body)).encode()), *(headers or [])]
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await send({"type": "http.response.body", "body": body})

    def _left(self) -> None:
        self.disconnects.append(time.monotonic())
        self.disconnected.set()

    async def _wait_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left()

    async def _wait_disconnect_then_cancel(self, receive: Receive, nursery: trio.Nursery) -> None:
        await self._wait_disconnect(receive)
        nursery.cancel_scope.cancel()


async def serve_asgi(nursery: trio.Nursery, app: Any) -> int:
    """Serves an ASGI app with hypercorn on 127.0.0.1:0 and returns the port."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, mode="asgi"))
    return int(binds[0].rpartition(":")[2])


async def start_upstream(nursery: trio.Nursery, name: str = "upstream") -> Upstream:
    upstream = Upstream(name)
    upstream.port = await serve_asgi(nursery, upstream)
    return upstream


@asynccontextmanager
async def run_gateway(config: ConfigBuilder | str) -> AsyncIterator[Gateway]:
    """Runs a gateway on `config` (text only where the text itself is under test)."""
    text = config.toml() if isinstance(config, ConfigBuilder) else config
    async with open_gateway(loads_config(text)) as gw:
        yield gw


def url(gw: Gateway, path: str = "/", listener: str = "edge") -> str:
    return f"http://127.0.0.1:{gw.listener_ports[listener]}{path}"


def admin_url(gw: Gateway, path: str) -> str:
    return f"http://127.0.0.1:{gw.admin_port}{path}"


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 2.0) -> bytes:
    """Sends raw bytes and reads until the server closes (or the timeout); returns all."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(read_timeout):
            while chunk := await stream.receive_some(65536):
                out += chunk
        return out


async def read_until(stream: trio.SocketStream, marker: bytes, timeout: float = 2.0) -> bytes:
    out = b""
    with trio.fail_after(timeout):
        while marker not in out:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            out += chunk
    return out


async def eventually(predicate: Any, timeout: float = 2.0) -> None:
    """Waits until `predicate()` is true: stats are recorded just after the last byte is
    written, so a client can see its response a moment before the counters move."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


@attrs.define
class KeepAliveUpstream:
    """A raw-socket HTTP/1.1 upstream (h11) that answers "ok" with keep-alive and records
    when each connection closes: the view an ASGI app cannot give of idle connections."""

    port: int = 0
    opened: int = 0
    closed_at: list[float] = attrs.Factory(list)
    close_after: int | None = None
    #: The body of every answer; head and body leave in one write.
    body: bytes = b"ok"
    #: Requests answered, on all connections.
    served: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        import h11

        self.opened += 1
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.EndOfMessage):
                    length = str(len(self.body))
                    await stream.send_all(
                        conn.send(
                            h11.Response(status_code=200, headers=[("content-length", length)])
                        )
                        + conn.send(h11.Data(data=self.body))
                        + conn.send(h11.EndOfMessage())
                    )
                    served += 1
                    self.served += 1
                    if self.close_after is not None and served >= self.close_after:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            self.closed_at.append(time.monotonic())
            await stream.aclose()


async def start_keepalive_upstream(nursery: trio.Nursery) -> KeepAliveUpstream:
    upstream = KeepAliveUpstream()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, upstream.handle, listeners)
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream


async def start_scripted_upstream(nursery: trio.Nursery, response: bytes) -> tuple[int, trio.Event]:
    """A raw TCP upstream that reads one request head, writes `response` verbatim, closes."""
    done = trio.Event()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            await stream.send_all(response)
        done.set()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return listeners[0].socket.getsockname()[1], done


class RawH2Client:
    """A hand-driven HTTP/2 client (h2 over a trio socket) for what real clients hide:
    resetting a stream at a chosen moment, or resetting hundreds of them quickly."""

    def __init__(self, stream: trio.SocketStream) -> None:
        import h2.config
        import h2.connection

        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[Any] = []

    @classmethod
    async def connect(cls, port: int) -> "RawH2Client":
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())

    def request(self, path: str, end_stream: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path)]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

    async def read_until(self, predicate: Any, timeout: float = 3.0) -> list[Any]:
        """Reads frames until `predicate(event)` holds for one; returns all events so far."""
        with trio.fail_after(timeout):
            while not any(predicate(e) for e in self.events):
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.events.extend(self.conn.receive_data(data))
                await self.flush()
        return self.events


@attrs.define
class ScriptedH2Upstream:
    """A raw HTTP/2 upstream (h2 over trio) for behaviour real servers rarely show on cue:
    `goaway_after` responses it sends GOAWAY; `silent` makes it read and never answer
    (not even PING), like a host that died without closing its connections."""

    port: int = 0
    connections: int = 0
    goaway_after: int | None = None
    silent: bool = False

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        # A gateway that closes an idle connection may reset it: that ends this one only.
        with contextlib.suppress(trio.BrokenResourceError):
            async with stream:
                await self._serve(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        import h2.config
        import h2.connection
        import h2.events

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        served = 0
        goaway_sent = False
        if not self.silent:
            await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            if self.silent or goaway_sent:
                # After its GOAWAY, h2 refuses every frame (a late SETTINGS ACK from the
                # gateway included); the test only needs the connection to end.
                continue
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, [(":status", "200")])
                    conn.send_data(event.stream_id, b"h2 ok", end_stream=True)
                    served += 1
                    if self.goaway_after is not None and served >= self.goaway_after:
                        conn.close_connection(last_stream_id=event.stream_id)
                        goaway_sent = True
            await stream.send_all(conn.data_to_send())


async def start_scripted_h2_upstream(nursery: trio.Nursery, **kwargs: Any) -> ScriptedH2Upstream:
    upstream = ScriptedH2Upstream(**kwargs)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, upstream.handle, listeners)
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream


@attrs.define
class Served:
    """A `gateway serve` process, its start-up log line and what it logged so far."""

    process: trio.Process
    line: str
    log: bytes

    @property
    def port(self) -> int:
        """The `edge` listener's port, from the start-up line."""
        return int(self.line.split("{'edge': ")[1].split(",")[0].split("}")[0])

    async def read_log_until(self, text: bytes, timeout: float = 5.0) -> None:
        assert self.process.stderr is not None
        with trio.fail_after(timeout):
            while text not in self.log:
                data = await self.process.stderr.receive_some(4096)
                assert data, self.log.decode()
                self.log += data


@asynccontextmanager
async def serving(
    config: Path, started: str = "gateway started", *options: str
) -> AsyncIterator[Served]:
    """Runs `gateway serve CONFIG [OPTIONS]` until the log says `started`; on the way out
    stops it (SIGTERM: a drain; then SIGKILL if it hangs)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "serve", str(config), *options], stderr=subprocess.PIPE
    )
    try:
        served = Served(process, "", b"")
        await served.read_log_until(started.encode(), timeout=20)
        served.line = next(x for x in served.log.decode().splitlines() if started in x)
        yield served
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers that need it in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@attrs.define
class SteadyLoad:
    """Clients that each send GETs one after another until cancelled, recording what
    failed (a transport error, or a status other than 200) instead of raising."""

    failures: list[str] = attrs.Factory(list)
    #: Answers received.
    served: int = 0
    #: The longest any request took, in seconds: what a bystander felt of an attack.
    slowest: float = 0.0

    async def client(
        self, target: str, *, label: str = "", timeout: float = 10, **options: Any
    ) -> None:
        async with httpx.AsyncClient(timeout=timeout, **options) as client:
            while True:
                start = time.monotonic()
                try:
                    response = await client.get(target)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{label}{exc!r}")
                    continue
                finally:
                    self.slowest = max(self.slowest, time.monotonic() - start)
                if response.status_code != 200:
                    self.failures.append(f"{label}{response.status_code} {response.text}")
                self.served += 1

    async def until_served(self, count: int, timeout: float = 5.0) -> None:
        """Waits until `count` more answers came in (the clients are up and steady)."""
        target = self.served + count
        with trio.fail_after(timeout):
            while self.served < target:
                await trio.sleep(0.01)


async def converged(
    client: httpx.AsyncClient, urls: list[str], expected: set[str], timeout: float
) -> None:
    """Waits until GETs of every URL are answered by exactly the `expected` upstreams (the
    JSON `server` field; a status other than 200 counts as its number), sampling each URL
    often enough that round robin shared with other load cannot hide a host by chance."""
    seen: set[str] = set()
    with trio.move_on_after(timeout):
        while True:
            seen = set()
            try:
                for target in urls:
                    for _ in range(12):
                        response = await client.get(target)
                        ok = response.status_code == 200
                        seen.add(response.json()["server"] if ok else str(response.status_code))
            except httpx.HTTPError:
                seen.add("unreachable")
            if seen == expected:
                return
            await trio.sleep(0.05)
    raise AssertionError(f"{urls}: after {timeout}s still {seen}, not {expected}")
