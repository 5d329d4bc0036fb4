"""An HTTP/3 client driven by hand: aioquic's sans-IO QUIC and HTTP/3 over a trio UDP
socket, for tests that need what a client library would not do (attacks), or one QUIC
connection kept open across what the test does to the gateway (a reload)."""

import socket
from collections.abc import Callable

import trio
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent


class RawH3Client:
    """One QUIC connection driven by hand: `pump` moves datagrams until the gateway is
    quiet, events are kept for the test to look at."""

    def __init__(self, port: int, ca_file: str) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
        config.load_verify_locations(ca_file)
        config.max_data = config.max_stream_data = 64 << 20
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.address = ("127.0.0.1", port)
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.events: list[QuicEvent] = []
        self.h3_events: list[H3Event] = []

    async def connect(self) -> None:
        await self.sock.bind(("127.0.0.1", 0))
        self.quic.connect(self.address, now=trio.current_time())
        await self.pump(until=lambda: self.h3.received_settings is not None)

    async def flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=trio.current_time()):
            await self.sock.sendto(data, addr)

    async def pump(self, *, until: Callable[[], bool] = lambda: False, quiet: float = 0.3) -> None:
        """Sends what is due, then reads until `until()` holds or nothing came for `quiet`."""
        await self.flush()
        while not until():
            with trio.move_on_after(quiet) as scope:
                timer = self.quic.get_timer()
                if timer is not None:
                    scope.deadline = min(scope.deadline, timer)
                data, _ = await self.sock.recvfrom(65536)
                self.quic.receive_datagram(data, self.address, now=trio.current_time())
            if scope.cancelled_caught:
                timer = self.quic.get_timer()
                if timer is None or timer > trio.current_time():
                    return
                self.quic.handle_timer(now=trio.current_time())
            while (event := self.quic.next_event()) is not None:
                self.events.append(event)
                self.h3_events += self.h3.handle_event(event)
            await self.flush()

    def request(self, path: str, *, end: bool = True) -> int:
        sid = self.quic.get_next_available_stream_id()
        head = [
            (b":method", b"POST" if not end else b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(sid, head, end_stream=end)
        return sid

    @property
    def closed(self) -> ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, ConnectionTerminated)), None)

    async def get(self, path: str, *, timeout: float = 5.0) -> tuple[dict[bytes, bytes], bytes]:
        """One GET on this connection: the response head's fields and the body."""
        sid = self.request(path)

        def ended() -> bool:
            return any(
                isinstance(e, HeadersReceived | DataReceived)
                and e.stream_id == sid
                and e.stream_ended
                for e in self.h3_events
            )

        with trio.fail_after(timeout):
            while not ended():
                await self.pump(until=ended, quiet=0.2)
        mine = [e for e in self.h3_events if getattr(e, "stream_id", None) == sid]
        head = next(e for e in mine if isinstance(e, HeadersReceived))
        body = b"".join(e.data for e in mine if isinstance(e, DataReceived))
        return dict(head.headers), body
