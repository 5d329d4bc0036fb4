"""A TLS stream that keeps its TCP socket in reach.

The codecs and pools treat a connection as a `trio.SocketStream`: they close it with
`stream.socket.close()` (synchronous, so safe in `finally` and while cancelled), and a
pool asks `stream.socket.is_readable()` to tell that an idle connection was closed by its
peer. `trio.SSLStream` hides its transport's socket, so `TlsStream` wraps one and exposes
the socket beside it; everything else is the SSLStream's. Closing the socket under a TLS
session skips close_notify, which HTTP does not need (trio's `https_compatible`).
"""

import trio


class TlsStream(trio.abc.Stream):
    def __init__(self, tls: trio.SSLStream[trio.SocketStream]) -> None:
        self.tls = tls
        self.socket = tls.transport_stream.socket

    def __repr__(self) -> str:
        return f"<TlsStream fd={self.socket.fileno()}>"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.tls.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.tls.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.tls.aclose()


#: What a connection's bytes travel over, downstream or upstream: cleartext or TLS.
ByteStream = trio.SocketStream | TlsStream
