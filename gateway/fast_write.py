"""Writes that finish at once skip the scheduler.

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
"""

import os

import trio

from gateway.tls_stream import ByteStream


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
