"""In-memory connections as `ByteStream`s: the transport of everything the scenario engine
simulates (clients to listeners, clusters to upstream hosts)."""

import trio
import trio.testing

from gateway.io.byte_stream import ByteStream

_Stapled = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]


class MemoryStream(ByteStream):
    """One end of an in-memory connection (`trio.testing.memory_stream_pair`). What it
    sends is in the peer's buffer when `send_all` returns (trio's pump runs in it), so the
    peer's count of unread bytes is kept here, where both ends can see it: that is how it
    answers a pool's `is_readable()` (the peer sent bytes not read yet, or closed)."""

    def __init__(self, stream: _Stapled, *, record_writes: bool = False) -> None:
        self._stream = stream
        self.peer: MemoryStream | None = None
        #: Bytes the peer sent that this end has not received yet; whether it closed.
        self._unread = 0
        self._peer_closed = False
        #: What each `send_all` wrote, in order, if asked: a test can tell one write from
        #: two. Off by default: a long simulation would keep every byte.
        self.writes: list[bytes] | None = [] if record_writes else None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.writes is not None:
            self.writes.append(bytes(data))
        await self._stream.send_all(data)
        assert self.peer is not None
        self.peer._unread += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        self._unread -= len(data)
        return data

    async def send_eof(self) -> None:
        await self._stream.send_eof()
        self._tell_peer_closed()

    async def aclose(self) -> None:
        self._tell_peer_closed()
        await self._stream.aclose()

    def close_now(self) -> None:
        self._tell_peer_closed()
        self._stream.send_stream.close()
        self._stream.receive_stream.close()

    def is_readable(self) -> bool:
        return self._unread > 0 or self._peer_closed

    def _tell_peer_closed(self) -> None:
        assert self.peer is not None
        self.peer._peer_closed = True


def memory_stream_pair(*, record_writes: bool = False) -> tuple[MemoryStream, MemoryStream]:
    """Two connected `MemoryStream`s."""
    a, b = trio.testing.memory_stream_pair()
    left = MemoryStream(a, record_writes=record_writes)
    right = MemoryStream(b, record_writes=record_writes)
    left.peer, right.peer = right, left
    return left, right
