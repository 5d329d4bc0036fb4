"""WebSocket upstreams for the tunnel tests: a trio-websocket echo server that records how
connections ended, and a raw one that accepts the handshake and then dies."""

import base64
import hashlib
import ssl
import time

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@attrs.define
class EchoServer:
    """Echoes every message. "close:CODE" closes with CODE; "ping-me" pings the client.
    Paths starting /reject are refused with 403."""

    port: int = 0
    closes: list[tuple[int | None, str | None, float]] = attrs.Factory(list)
    closed: trio.Event = attrs.Factory(trio.Event)
    handshakes: list[dict[str, str]] = attrs.Factory(list)

    async def handle(self, request: WebSocketRequest) -> None:
        self.handshakes.append({k.decode(): v.decode() for k, v in request.headers})
        if request.path.startswith("/reject"):
            await request.reject(403, body=b"no websockets for you")
            return
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str) and message.startswith("close:"):
                    await ws.aclose(code=int(message.split(":")[1]), reason="server bye")
                    return
                await ws.send_message(message)
        except ConnectionClosed as exc:
            self.closes.append((exc.reason.code, exc.reason.reason, time.monotonic()))
            self.closed.set()


async def start_echo_server(
    nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None
) -> EchoServer:
    """An echo server on 127.0.0.1, over TLS (wss://) with `ssl_context`."""
    server = EchoServer()
    ws_server = await nursery.start(serve_websocket, server.handle, "127.0.0.1", 0, ssl_context)
    server.port = ws_server.port
    return server


async def start_dying_server(nursery: trio.Nursery, die: trio.Event | None = None) -> int:
    """Accepts a WebSocket handshake, sends 101, then drops the connection: after 100 ms,
    or when `die` is set, and then as a killed process would, without a close frame."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in data.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        if die is None:
            await trio.sleep(0.1)
        else:
            await die.wait()
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return listeners[0].socket.getsockname()[1]
