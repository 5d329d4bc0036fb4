"""The Trio half of an HTTP/2 connection, shared by the downstream and upstream sides.

The codec (gateway.protocol.codec_h2) is sans-IO: it queues frames and does the
flow-control arithmetic; this class moves the bytes. Two rules, each a known way to break
an HTTP/2 proxy:

* One writer at a time, and frames leave in the codec's order: `flush()` takes the pending
  bytes *inside* the send lock, so no task can overtake another's frames.
* Never send past the window (h2#177, httpcore#1082): the codec queues only what the
  windows allow, and a sender with no window waits for a WINDOW_UPDATE or SETTINGS change,
  which the reader task signals. The waiting task is never the reader (h2#976), and every
  wait has a deadline.
"""

from typing import Protocol

import trio

from gateway.io.byte_stream import ByteStream
from gateway.io.fast_io import Receiver
from gateway.io.trio_util import PEER_GONE

#: How long one write may take before the peer is considered gone.
WRITE_TIMEOUT = 30.0


class FlowControlTimeout(Exception):
    """The peer kept its window shut for longer than we wait."""


class FrameSource(Protocol):
    """What the transport needs of an HTTP/2 codec (gateway.protocol.codec_h2.H2Codec)."""

    def data_to_send(self) -> bytes: ...

    def send_data(self, stream_id: int, data: memoryview, *, end_stream: bool) -> int: ...


class H2Transport:
    def __init__(self, stream: ByteStream, codec: FrameSource, lost_error: type[Exception]) -> None:
        #: Raised when a write fails: DownstreamDisconnect or UpstreamReset, by side.
        self._lost_error = lost_error
        self.stream = stream
        self._codec = codec
        self._send_lock = trio.StrictFIFOLock()
        #: What a synchronous write left over; the next `flush()` sends it first.
        self._unsent = b""
        self._window_changed = trio.Event()
        self.broken = False
        #: Bytes read from and written to the socket, for /tasks.
        self.bytes_received = 0
        self._receiver = Receiver(stream)
        self.bytes_sent = 0

    async def receive(self) -> bytes:
        """Bytes from the peer; b"" when it closed or reset the connection."""
        data = await self._receiver.receive_or_eof()
        self.bytes_received += len(data)
        return data

    def flush_now(self) -> bool:
        """Writes what the codec has queued if the socket takes it at once, with no trip
        through the scheduler (gateway/io/fast_io.py); True when nothing is left to write.
        False means a write is in progress or the socket took only part: `flush()`
        finishes the job."""
        if self._send_lock.locked() or self._unsent:
            return False  # frames must leave in order: behind the bytes still owed
        if self.broken:
            raise self._lost_error("HTTP/2 connection is broken")
        data = self._codec.data_to_send()
        if not data:
            return True
        try:
            sent = self.stream.send_now(data)
        except PEER_GONE as exc:
            self.broken = True
            raise self._lost_error(f"HTTP/2 write failed: {exc!r}") from exc
        self.bytes_sent += sent
        if sent < len(data):
            self._unsent = data[sent:]
            return False
        return True

    async def flush(self, extra: bytes = b"") -> None:
        """Writes whatever the codec has queued (plus `extra` raw frames after it).

        The bytes taken may hold other streams' frames, and HPACK makes every HEADERS
        frame depend on all before it: a write cut short by one stream's cancellation would
        corrupt the whole connection. So the write is shielded from cancellation and bounded
        by WRITE_TIMEOUT instead; a peer that takes no bytes for that long is dropped.
        """
        if not extra and self.flush_now():
            return
        async with self._send_lock:
            if self.broken:
                raise self._lost_error("HTTP/2 connection is broken")
            # Bytes the socket did not take at once go first: frames leave in order.
            data = self._unsent + self._codec.data_to_send() + extra
            self._unsent = b""
            if data:
                await self._send_shielded(data)

    async def _send_shielded(self, data: bytes) -> None:
        """Writes `data` whole: shielded from cancellation, bounded by WRITE_TIMEOUT."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_TIMEOUT) as scope:
            try:
                await self.stream.send_all(data)
                self.bytes_sent += len(data)
            except PEER_GONE as exc:
                self.broken = True
                raise self._lost_error(f"HTTP/2 write failed: {exc!r}") from exc
        if scope.cancelled_caught:
            self.broken = True
            self.stream.close_now()
            raise self._lost_error("HTTP/2 write timed out")

    def window_changed(self) -> None:
        """Called by the reader on PeerLimitsChanged: wakes blocked senders."""
        self._window_changed.set()
        self._window_changed = trio.Event()

    async def send_data(
        self,
        stream_id: int,
        data: bytes,
        end_stream: bool,
        window_timeout: float,
        *,
        flush: bool = True,
    ) -> None:
        """Sends a body chunk, never past the flow-control windows. Raises the codec's
        StreamGone, or FlowControlTimeout when the window stays shut `window_timeout`.
        With flush=False a chunk the windows take whole stays queued for the next flush
        (the caller sends more at once: the trailers)."""
        view = memoryview(data)
        while True:
            # Taken before the window is read: a WINDOW_UPDATE that arrives while we flush
            # sets this event, not a later one.
            changed = self._window_changed
            taken = self._codec.send_data(stream_id, view, end_stream=end_stream)
            view = view[taken:]
            if not view and not flush:
                return
            # What is queued (this stream's HEADERS, other streams' frames) need not wait
            # for this window: HEADERS are not flow controlled.
            await self.flush()
            if not view:
                return
            if not taken:
                with trio.move_on_after(window_timeout) as scope:
                    await changed.wait()
                if scope.cancelled_caught:
                    raise FlowControlTimeout(f"stream {stream_id}: window closed too long")
