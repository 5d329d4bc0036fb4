"""The Trio half of a QUIC connection: datagrams in from the listener, datagrams out on
the listener's UDP socket, and the codec's timer as a cancel scope's deadline.

QUIC is datagrams, so what carries over from the byte-stream connections is the shape,
not the interface: one reader (the connection's task) feeds the codec and dispatches
events; stream tasks queue frames and `flush()`; a sender whose stream buffer is full
waits for the peer's acknowledgements, which the reader signals (`window_changed`).

Two rules of a UDP server on one event loop:

* Sends never wait. The socket is shared by every connection of the listener, and a send
  that waited for room would make one connection's burst everyone's stall (and two tasks
  waiting on one socket is an error in Trio). A datagram the kernel has no room for is
  dropped and counted; QUIC's loss recovery sends it again, and its congestion control
  slows down, which is what a full buffer asks for.
* The codec's timer (acknowledgement delay, loss detection, pacing, idle timeout) is the
  deadline of the reader's wait, moved whenever a flush may have changed it.
"""

import math
import socket
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import trio

Event = TypeVar("Event")
#: A peer's address as the socket reports it ((host, port) for IPv4, four items for IPv6).
PeerAddress = Any
Datagram = tuple[bytes, PeerAddress]


class DatagramCodec(Protocol[Event]):
    """What the transport needs of a QUIC codec (gateway.protocol.codec_h3.H3Codec)."""

    def receive_datagram(self, data: bytes, addr: PeerAddress, now: float) -> list[Event]: ...

    def handle_timer(self, now: float) -> list[Event]: ...

    def timer(self) -> float | None: ...

    def datagrams_to_send(self, now: float) -> list[Datagram]: ...

    def send_data(self, stream_id: int, data: memoryview, *, end_stream: bool) -> int: ...


class SendTimeout(Exception):
    """The peer acknowledged nothing of a full stream buffer for longer than we wait."""


class QuicTransport(Generic[Event]):
    def __init__(
        self,
        sock: socket.socket,
        codec: DatagramCodec[Event],
        inbox: trio.MemoryReceiveChannel[Datagram],
        on_send_dropped: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._codec = codec
        self._inbox = inbox
        self._on_send_dropped = on_send_dropped
        self._wait_scope: trio.CancelScope | None = None
        self._until = math.inf
        self._window_changed = trio.Event()
        self._flusher_running = False
        self._flush_wanted = False
        self._wake_flusher = trio.Event()
        #: The listener closed the queue: nothing more will arrive.
        self.inbox_closed = False
        #: Bytes in and out, for /tasks.
        self.bytes_received = 0
        self.bytes_sent = 0

    async def receive(self, until: float = math.inf) -> list[Event]:
        """Events from the datagrams that arrive next (all that are queued, in one batch),
        or from the codec's timer; [] when `until` (trio time) came first or the queue
        was closed."""
        codec = self._codec
        timer = codec.timer()
        self._until = until
        with trio.CancelScope(deadline=min(until, math.inf if timer is None else timer)) as scope:
            self._wait_scope = scope
            try:
                data, addr = await self._inbox.receive()
            except trio.EndOfChannel:
                self.inbox_closed = True
                return []
            finally:
                self._wait_scope = None
        now = trio.current_time()
        if scope.cancelled_caught:
            timer = codec.timer()
            return codec.handle_timer(now) if timer is not None and timer <= now else []
        self.bytes_received += len(data)
        events = codec.receive_datagram(data, addr, now)
        while True:
            try:
                data, addr = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return events
            self.bytes_received += len(data)
            events += codec.receive_datagram(data, addr, now)

    def flush(self) -> None:
        """Has what the codec has ready sent: at once without a flusher task, else by the
        flusher once the tasks running now have queued theirs (`run_flusher`)."""
        if not self._flusher_running:
            self.flush_now()
        elif not self._flush_wanted:
            self._flush_wanted = True
            self._wake_flusher.set()

    async def run_flusher(self) -> None:
        """Sends on behalf of the connection's tasks, one batch of theirs at a time. Each
        send builds, encrypts and writes packets: ten streams ending their responses in
        one scheduler round would each pay for a packet of their own; a flusher woken by
        the first runs after all of them and puts their frames in as few packets as fit
        (about a third of the proxy's CPU per HTTP/3 request went to building packets)."""
        self._flusher_running = True
        try:
            while True:
                await self._wake_flusher.wait()
                self._wake_flusher = trio.Event()
                self._flush_wanted = False
                self.flush_now()
        finally:
            self._flusher_running = False

    def flush_now(self) -> None:
        """Sends what the codec has ready, never waiting (see the module's docstring), and
        moves the reader's wake-up to the codec's new timer."""
        codec = self._codec
        for data, addr in codec.datagrams_to_send(trio.current_time()):
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self._on_send_dropped()
                continue
            except OSError:
                # The peer's address is unreachable (an ICMP error came back, or the
                # route is gone): as if lost; the idle timeout ends the connection.
                self._on_send_dropped()
                continue
            self.bytes_sent += len(data)
        scope = self._wait_scope
        if scope is not None:
            timer = codec.timer()
            scope.deadline = min(self._until, math.inf if timer is None else timer)

    def wake(self) -> None:
        """Ends the reader's wait now (its connection has something to decide)."""
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def window_changed(self) -> None:
        """Called by the reader after acknowledgements came: wakes blocked senders."""
        self._window_changed.set()
        self._window_changed = trio.Event()

    async def send_data(
        self,
        stream_id: int,
        data: bytes,
        end_stream: bool,
        ack_timeout: float,
        *,
        flush: bool = True,
    ) -> None:
        """Sends a body chunk, no more of it queued at once than the codec takes. Raises
        the codec's StreamGone, or SendTimeout when the peer acknowledges nothing for
        `ack_timeout`. With flush=False a chunk taken whole waits for the next flush (the
        caller sends more at once: the trailers)."""
        view = memoryview(data)
        while True:
            changed = self._window_changed
            taken = self._codec.send_data(stream_id, view, end_stream=end_stream)
            view = view[taken:]
            if not view and not flush:
                return
            self.flush()
            if not view:
                return
            if not taken:
                with trio.move_on_after(ack_timeout) as scope:
                    await changed.wait()
                if scope.cancelled_caught:
                    raise SendTimeout(f"stream {stream_id}: nothing acknowledged for too long")
