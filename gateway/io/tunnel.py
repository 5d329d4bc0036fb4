"""Tunnels: after an upgrade (WebSocket), bytes flow both ways without being parsed.

A tunnel joins two endpoints: the downstream side (the client's raw socket after a 101, or
one HTTP/2 stream's DATA frames after an extended CONNECT) and the upstream side (the
upstream's raw socket after its 101). Two pump tasks copy bytes, one per direction, in a
nursery that is the tunnel: either side ending cancels nothing by itself, because a
half-close is legal (the pump that saw EOF passes it on with `send_eof` and stops; the other
direction carries on), but an error on either side, the idle timeout or the maximum
duration ends both at once. A side that cannot be half-closed (TLS: trio has no way to
send close_notify and keep reading) cannot be told that the other side ended while the
tunnel goes on, so there the end of either direction ends the tunnel: both sides are told
(close_notify, FIN, END_STREAM), or a wss:// client would wait for a close that never comes.
Buffers are bounded: a pump holds one chunk at a time, so a slow reader stops its pump,
which stops reading its source, and TCP (or HTTP/2 flow control) pushes back on the fast
writer.
"""

import math
import os
import time
from typing import Any, Protocol

import attrs
import trio

from gateway.errors import DownstreamDisconnect, UpstreamReset
from gateway.io.byte_stream import ByteStream, TcpStream
from gateway.io.tls_stream import TlsStream
from gateway.io.trio_util import PEER_GONE, RECEIVE_SIZE, raise_single, receive_or_eof
from gateway.observability.tasktree import annotate

#: How long telling a side that the tunnel ended may take (close_notify to a client that
#: does not read): after that it is closed without.
_GOODBYE_TIMEOUT = 1.0


class TunnelEndpoint(Protocol):
    #: Whether this side can be told "no more bytes" and still send: if not, the end of
    #: the other side's bytes is the end of the tunnel.
    half_closable: bool

    async def receive(self) -> bytes:
        """The next bytes from this side; b"" when it half-closed (or went away)."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def send_eof(self) -> None:
        """Tells this side no more bytes will come (on a side that is not
        `half_closable`, this closes it)."""


class SocketEndpoint:
    """A connection's byte stream (after an HTTP/1.1 switch, or a tcp_proxy's), with
    bytes a codec had read ahead. Cleartext or TLS: TLS cannot be half-closed over trio
    (its `send_eof` only half-closes the transport under it, which does not tell the peer
    properly), so `send_eof` here sends close_notify and closes it."""

    def __init__(self, stream: ByteStream, initial: bytes) -> None:
        self._stream = stream
        self._initial = initial
        self.half_closable = not isinstance(stream, TlsStream)

    async def receive(self) -> bytes:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        stream = self._stream
        if type(stream) is not TcpStream:  # TLS, or a test's in-memory stream
            return await receive_or_eof(stream)
        # The socket directly, not SocketStream.receive_some: an idle tunnel parks two of
        # these, and the shallower await chain is most of what an idle tunnel costs.
        sock = stream.socket
        while True:
            try:
                return os.read(sock.fileno(), RECEIVE_SIZE)
            except BlockingIOError:
                pass
            except OSError:
                return b""
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError):
                return b""

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        try:
            if isinstance(self._stream, TlsStream):
                await self._stream.aclose()
            else:
                await self._stream.send_eof()
        except PEER_GONE:
            pass  # already gone: nothing left to tell


@attrs.define
class TunnelResult:
    """Bytes each way (kept up to date while the tunnel runs, so a tunnel that breaks is
    still accounted for), and why it ended: "" when both sides closed, "SI" after the idle
    timeout, "DT" after the maximum duration (Envoy's response flags)."""

    sent_up: int = 0
    sent_down: int = 0
    cut: str = ""


async def run_tunnel(
    downstream: TunnelEndpoint,
    upstream: TunnelEndpoint,
    result: TunnelResult,
    *,
    idle_timeout: float,
    max_duration: float,
    describe: dict[str, Any],
) -> None:
    """Pumps bytes both ways until both sides finished, an error, or a timeout ("0s" turns
    either timeout off). Raises DownstreamDisconnect or UpstreamReset when a side broke."""
    last_activity = [time.monotonic()]
    annotate(
        "tunnel",
        live=lambda: {
            "bytes_up": result.sent_up,
            "bytes_down": result.sent_down,
            "idle_s": round(time.monotonic() - last_activity[0], 1),
        },
        **describe,
    )
    # One cancel scope is the tunnel's whole lifetime: its deadline moves forward with
    # every chunk (the idle timeout) but never past the maximum duration. No watchdog task:
    # an idle tunnel costs two parked tasks and nothing else.
    hard_deadline = trio.current_time() + max_duration if max_duration > 0 else math.inf
    idle = idle_timeout if idle_timeout > 0 else math.inf

    #: The sides already told that no more bytes will come.
    told: list[TunnelEndpoint] = []
    ended = False  # one direction ended towards a side that cannot be half-closed

    async def pump(
        source: TunnelEndpoint, sink: TunnelEndpoint, upward: bool, scope: trio.CancelScope
    ) -> None:
        nonlocal ended
        while data := await source.receive():
            last_activity[0] = time.monotonic()
            scope.deadline = min(trio.current_time() + idle, hard_deadline)
            if upward:
                result.sent_up += len(data)
            else:
                result.sent_down += len(data)
            try:
                await sink.send(data)
            except PEER_GONE as exc:
                raise (UpstreamReset if upward else DownstreamDisconnect)(str(exc)) from exc
        if sink.half_closable:
            await sink.send_eof()
            told.append(sink)
        else:
            # Stop the other pump first: it reads the side about to be closed, and a TLS
            # stream busy in a read cannot send its close_notify.
            ended = True
            scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            scope.deadline = min(trio.current_time() + idle, hard_deadline)
            nursery.start_soon(
                pump, upstream, downstream, False, scope, name="tunnel upstream->client"
            )
            await pump(downstream, upstream, True, scope)
    except BaseExceptionGroup as group:
        raise_single(group)
    if ended:
        with trio.move_on_after(_GOODBYE_TIMEOUT):
            for side in (downstream, upstream):
                if side not in told:
                    await side.send_eof()
    elif scope.cancelled_caught:
        result.cut = "DT" if trio.current_time() >= hard_deadline else "SI"
