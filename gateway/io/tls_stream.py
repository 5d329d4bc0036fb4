"""TLS as a `ByteStream`: a `trio.SSLStream` over another `ByteStream` (a `TcpStream`, or
a test's in-memory stream), whose transport answers the two verbs a `ByteStream` adds.

`close_now()` closes the transport under the session, which skips close_notify (HTTP does
not need it: trio's `https_compatible`), and `is_readable()` asks the transport. TLS
cannot be half-closed over trio (it has no way to send close_notify and keep reading), so
`send_eof` half-closes the transport under the session instead: the peer reads EOF, and
this side can still read what it sends, which is what a lingering close needs. A tunnel,
which needs the peer told properly, ends a TLS side with `aclose` (close_notify).
"""

import trio

from gateway.io.byte_stream import ByteStream


class TlsStream(ByteStream):
    __slots__ = ("tls", "transport")

    def __init__(self, tls: trio.SSLStream[ByteStream]) -> None:
        self.tls = tls
        self.transport = tls.transport_stream

    def __repr__(self) -> str:
        return f"<TlsStream over {self.transport!r}>"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.tls.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.tls.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.tls.aclose()

    def close_now(self) -> None:
        self.transport.close_now()

    def is_readable(self) -> bool:
        return self.transport.is_readable()
