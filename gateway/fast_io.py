"""Socket I/O with fewer trips through the scheduler and fewer syscalls.

Writes that finish at once skip the scheduler:

`trio.SocketStream.send_all` makes every write a checkpoint: even when the kernel takes all
the bytes at once, the task yields to the scheduler, which then runs a whole loop
iteration (an epoll poll included) before the task goes on. A proxy writes a few small
buffers per request (the request head upstream, the response downstream), and the
kernel's socket buffer nearly always takes them whole, so those yields were a large part
of the per-request cost.

`send_now` tries the write synchronously on a plain TCP stream and reports how much went
out; the caller sends the rest, if any, the usual way (`send_all`, under its send lock).
Callers use it only where no other task can be inside `send_all` on the same stream at
that moment (they check their send lock), so bytes never interleave. TLS streams are left
to `send_all`: their bytes go through the TLS object's own state.

Reads that cannot succeed yet skip the attempt: `receive_some` first tries the read and,
on EAGAIN, waits for readiness and reads again. Where the caller knows the peer has not
answered yet (the upstream's response to a request just written, the client's next
request after a response just sent) that first try is a wasted syscall and a raised and
caught exception; `receive` waits first, then reads once.
"""

import os

import trio

from gateway.tls_stream import ByteStream
from gateway.trio_util import RECEIVE_SIZE


def send_now(stream: ByteStream, data: bytes) -> int:
    """Writes what the socket takes without blocking; returns the bytes written (0 for a
    TLS stream, or a socket whose buffer is full). Raises OSError (a reset, a closed
    socket) as the socket reports it."""
    if type(stream) is not trio.SocketStream:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0


async def receive(stream: ByteStream, last_size: int) -> bytes:
    """The next bytes from `stream` (b"" at EOF), given the size of the last read from it.
    A short last read drained the socket, so the peer's next bytes are probably not there
    yet: wait for readiness first, then read once. After a full read, try at once. Raises
    as `receive_some` does for a reset or closed socket."""
    if last_size >= RECEIVE_SIZE or type(stream) is not trio.SocketStream:
        return bytes(await stream.receive_some(RECEIVE_SIZE))
    sock = stream.socket
    if sock.fileno() < 0:
        raise trio.ClosedResourceError("the socket was closed")
    await trio.lowlevel.wait_readable(sock)
    try:
        return os.read(sock.fileno(), RECEIVE_SIZE)
    except BlockingIOError:  # woken without data after all: the usual way
        return bytes(await stream.receive_some(RECEIVE_SIZE))
