"""What the data path reads and writes: a byte stream, whatever carries it.

Every connection, downstream or upstream, reaches the codecs, pools and tunnels as a
`ByteStream`: trio's `HalfCloseableStream` (send_all, wait_send_all_might_not_block,
receive_some, send_eof, aclose) plus two verbs trio's streams lack and the data path
needs:

- `close_now()`: closes at once, without a checkpoint, so it is safe in `finally` and
  while cancelled (a cancelled write leaves a connection half written: it must go, and
  `aclose` would be cancelled too).
- `is_readable()`: bytes or EOF are waiting. A pool asks it of an idle connection: one
  that became readable was closed (or spoken to out of turn) by its upstream, and
  reusing it would lose the request.

A third verb is optional: `send_now(data)` writes what the transport takes at once, without
a trip through the scheduler (gateway/io/fast_io.py), and a stream that cannot (TLS) takes
nothing that way.

`TcpStream` is plain TCP, `TlsStream` (tls_stream.py) TLS over it; a test hands in
in-memory streams (tests/memory_net.py) the same way, and the scenario engine its own
(gateway/testing/memory_stream.py). `fast_io` and the tunnel's pumps read a `TcpStream`'s
socket directly, where that saves a trip through the scheduler; everything else goes
through these verbs.
"""

import abc
import os

import trio


class ByteStream(trio.abc.HalfCloseableStream):
    """A connection's bytes, either way (see the module docstring)."""

    __slots__ = ()

    @abc.abstractmethod
    def close_now(self) -> None:
        """Closes the stream at once, without telling the peer more than the transport
        does (TCP: FIN, or a reset if bytes were left unread; TLS: no close_notify)."""

    @abc.abstractmethod
    def is_readable(self) -> bool:
        """Whether a `receive_some` would return at once: bytes or EOF are waiting."""

    def send_now(self, data: bytes) -> int:
        """Writes what the transport takes at once, without waiting or yielding; returns
        the bytes written (gateway/io/fast_io.py says who may call it). This default takes
        none: TLS bytes go through the TLS object's own state, so `send_all` writes them."""
        return 0


class TcpStream(ByteStream):
    """Plain TCP: a `trio.SocketStream` (final, so held, not extended) and its socket,
    which `fast_io` and the tunnel use directly."""

    __slots__ = ("_tcp", "socket")

    def __init__(self, tcp: trio.SocketStream) -> None:
        self._tcp = tcp
        self.socket = tcp.socket

    def __repr__(self) -> str:
        return f"<TcpStream fd={self.socket.fileno()}>"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._tcp.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._tcp.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._tcp.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._tcp.send_eof()

    async def aclose(self) -> None:
        await self._tcp.aclose()

    def close_now(self) -> None:
        self.socket.close()

    def is_readable(self) -> bool:
        return self.socket.is_readable()

    def send_now(self, data: bytes) -> int:
        """Raises OSError (a reset, a closed socket) as the socket reports it."""
        try:
            return os.write(self.socket.fileno(), data)
        except BlockingIOError:
            return 0
