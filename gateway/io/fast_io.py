"""Socket I/O with fewer trips through the scheduler and fewer syscalls.

Writes that finish at once skip the scheduler:

`trio.SocketStream.send_all` makes every write a checkpoint: even when the kernel takes all
the bytes at once, the task yields to the scheduler, which then runs a whole loop
iteration (an epoll poll included) before the task goes on. A proxy writes a few small
buffers per request (the request head upstream, the response downstream), and the
kernel's socket buffer nearly always takes them whole, so those yields were a large part
of the per-request cost.

`ByteStream.send_now` tries the write synchronously (on plain TCP, and on the scenario
engine's in-memory streams) and reports how much went out; the caller sends the rest, if
any, the usual way (`send_all`, under its send lock). Callers use it only where no other
task can be inside `send_all` on the same stream at that moment (they check their send
lock), so bytes never interleave. TLS streams take nothing that way: their bytes go
through the TLS object's own state, so `send_all` writes them.

Reads that cannot succeed yet skip the attempt: `receive_some` first tries the read and,
on EAGAIN, waits for readiness and reads again. Where the caller knows the peer has not
answered yet (the upstream's response to a request just written, the client's next
request after a response just sent) that first try is a wasted syscall and a raised and
caught exception; a `Receiver` waits first, then reads once.
"""

import os

import trio

from gateway.io.byte_stream import ByteStream, TcpStream
from gateway.io.trio_util import PEER_GONE, RECEIVE_SIZE


class Receiver:
    """The reads of a stream's one reader, which remembers how the last read went: a short
    read drained the socket, so the peer's next bytes are probably not there yet and the
    next read waits for readiness first, then reads once; after a full read it tries at
    once."""

    __slots__ = ("_last_size", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._last_size = 0

    async def receive(self) -> bytes:
        """The next bytes (b"" at EOF). Raises as `receive_some` does for a reset or closed
        socket."""
        data = await self._read()
        self._last_size = len(data)
        return data

    async def receive_or_eof(self) -> bytes:
        """The next bytes; b"" once the peer closed, reset or went away."""
        try:
            return await self.receive()
        except PEER_GONE:
            return b""

    async def _read(self) -> bytes:
        stream = self.stream
        if self._last_size >= RECEIVE_SIZE or type(stream) is not TcpStream:
            return bytes(await stream.receive_some(RECEIVE_SIZE))
        sock = stream.socket
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("the socket was closed")
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), RECEIVE_SIZE)
        except BlockingIOError:  # woken without data after all: the usual way
            return bytes(await stream.receive_some(RECEIVE_SIZE))
