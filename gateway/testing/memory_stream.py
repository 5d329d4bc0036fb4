"""In-memory connections as `ByteStream`s: the transport of everything the scenario engine
simulates (clients to listeners, clusters to upstream hosts).

Each direction is a byte buffer and a parking lot for its reader. trio.testing's memory
streams would do, but they pump every write through a second stream with its own locks and
conflict detectors: a write and its read between two tasks cost twice what they cost here
(27 us against 55 per round trip), and a scenario of a hundred thousand requests makes
half a million of them. Like a socket's: a write is in the peer's buffer
when `send_all` returns, a closed peer makes writes fail (BrokenResourceError) and reads
end (b""), and a cancelled task is stopped by any call; only reads and closes yield.
"""

import trio

from gateway.io.byte_stream import ByteStream


class _Direction:
    """Bytes one end sent that the other has not read yet."""

    __slots__ = ("buffer", "eof", "readers")

    def __init__(self) -> None:
        self.buffer = bytearray()
        #: The sender closed (or half-closed) its side: reads end once the buffer is empty.
        self.eof = False
        self.readers = trio.lowlevel.ParkingLot()


class MemoryStream(ByteStream):
    """One end of an in-memory connection; `peer` is the other end."""

    def __init__(
        self, incoming: _Direction, outgoing: _Direction, *, record_writes: bool = False
    ) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self.peer: MemoryStream | None = None
        self._closed = False
        #: What each `send_all` wrote, in order, if asked: a test can tell one write from
        #: two. Off by default: a long simulation would keep every byte.
        self.writes: list[bytes] | None = [] if record_writes else None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A cancelled writer stops here, as at a socket's write; one that is not carries on
        # without yielding, as after a write the kernel took whole, and the reader runs
        # at the writer's next wait. (A yield here cost a scheduler round per write: a
        # tenth of a scenario's time, for nothing a reader could tell.)
        await trio.lowlevel.checkpoint_if_cancelled()
        self.send_now(data)

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Takes every byte (the buffer is unbounded: the simulated network has no
        kernel buffers to fill; docs/testing.md)."""
        if self._closed:
            raise trio.ClosedResourceError("this end was closed")
        assert self.peer is not None
        if self.peer._closed or self._outgoing.eof:
            raise trio.BrokenResourceError("the peer closed the connection")
        if self.writes is not None:
            self.writes.append(bytes(data))
        if data:
            self._outgoing.buffer += data
            self._outgoing.readers.unpark_all()
        return len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        incoming = self._incoming
        if incoming.buffer or incoming.eof or self._closed:
            await trio.lowlevel.checkpoint()
        # Woken by a write, a close or EOF; an empty write wakes it too, and is no EOF.
        while not (incoming.buffer or incoming.eof or self._closed):
            await incoming.readers.park()
        if self._closed:
            raise trio.ClosedResourceError("this end was closed")
        size = len(incoming.buffer) if max_bytes is None else max_bytes
        data = bytes(incoming.buffer[:size])
        del incoming.buffer[:size]
        return data

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        self._end_outgoing()

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end_outgoing()
        # A reader of this end parked in receive_some wakes to find it closed.
        self._incoming.readers.unpark_all()

    def is_readable(self) -> bool:
        return bool(self._incoming.buffer) or self._incoming.eof

    def _end_outgoing(self) -> None:
        self._outgoing.eof = True
        self._outgoing.readers.unpark_all()


def memory_stream_pair(*, record_writes: bool = False) -> tuple[MemoryStream, MemoryStream]:
    """Two connected `MemoryStream`s."""
    left_to_right, right_to_left = _Direction(), _Direction()
    left = MemoryStream(right_to_left, left_to_right, record_writes=record_writes)
    right = MemoryStream(left_to_right, right_to_left, record_writes=record_writes)
    left.peer, right.peer = right, left
    return left, right
