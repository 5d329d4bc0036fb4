"""The Trio half of an HTTP/2 connection, shared by the downstream and upstream sides.

h2 is sans-IO: it queues frames and does the flow-control arithmetic; this class moves the
bytes. Three rules, each a known way to break an HTTP/2 proxy:

* One writer at a time, and frames leave in h2's order: `flush()` takes h2's pending bytes
  *inside* the send lock, so no task can overtake another's frames.
* Never send past the window (h2#177, httpcore#1082): data goes out in pieces of at most
  min(stream window, connection window, peer's max frame size), and a sender with no window
  waits for a WINDOW_UPDATE or SETTINGS change, which the reader task signals. The waiting
  task is never the reader (h2#976), and every wait has a deadline.
* Credit inbound data only once it was forwarded, and credit data that arrives for streams
  we no longer want at once, or the connection window leaks away (h2#1210).
"""

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import trio

from gateway.config.model import Http2ProtocolOptions
from gateway.io.byte_stream import ByteStream
from gateway.io.fast_io import Receiver, send_now
from gateway.io.trio_util import PEER_GONE
from gateway.protocol.h2_guard import (
    CappedEncoder,
    FloodGuard,
    HeaderBlockBuffer,
    StreamLimitSettings,
)

#: How long one write may take before the peer is considered gone.
WRITE_TIMEOUT = 30.0


class FlowControlTimeout(Exception):
    """The peer kept its window shut for longer than we wait."""


def new_connection(
    *, client_side: bool, options: Http2ProtocolOptions
) -> h2.connection.H2Connection:
    """An h2 state machine with our SETTINGS, ready for `initiate_connection()`."""
    config = h2.config.H2Configuration(
        client_side=client_side, header_encoding=None, validate_inbound_headers=True
    )
    conn = h2.connection.H2Connection(config=config)
    conn.encoder = CappedEncoder()
    conn.incoming_buffer = HeaderBlockBuffer(
        server=not client_side, max_block_size=options.max_header_list_size
    )
    settings = h2.settings.Settings if client_side else StreamLimitSettings
    conn.local_settings = settings(
        client=client_side,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: options.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: options.initial_stream_window_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: options.max_frame_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: options.max_header_list_size,
            # RFC 8441: servers accept WebSocket over HTTP/2 as an extended CONNECT.
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 0 if client_side else 1,
        },
    )
    # Settings given as initial values count as already acknowledged, so h2 never applies
    # them to its decoder and frame reader itself; do it here.
    conn.decoder.max_header_list_size = options.max_header_list_size
    conn.max_inbound_frame_size = options.max_frame_size
    return conn


class H2Transport:
    def __init__(
        self,
        stream: ByteStream,
        conn: h2.connection.H2Connection,
        window: int,
        lost_error: type[Exception],
        guard: FloodGuard | None = None,
    ) -> None:
        #: Raised when a write fails: DownstreamDisconnect or UpstreamReset, by side.
        self._lost_error = lost_error
        self.stream = stream
        self.h2 = conn
        #: Downstream: counts the DATA frames we send (WINDOW_UPDATEs are allowed per frame).
        self._guard = guard
        self._connection_window = window
        self._send_lock = trio.StrictFIFOLock()
        #: What a synchronous write left over; the next `flush()` sends it first.
        self._unsent = b""
        self._window_changed = trio.Event()
        self.broken = False
        #: Bytes read from and written to the socket, for /tasks.
        self.bytes_received = 0
        self._receiver = Receiver(stream)
        self.bytes_sent = 0

    def start(self) -> None:
        """Queues the preface/SETTINGS and widens the connection window to our setting."""
        self.h2.initiate_connection()
        extra = self._connection_window - 65535
        if extra > 0:
            self.h2.increment_flow_control_window(extra)

    async def receive(self) -> bytes:
        """Bytes from the peer; b"" when it closed or reset the connection."""
        data = await self._receiver.receive_or_eof()
        self.bytes_received += len(data)
        return data

    def flush_now(self) -> bool:
        """Writes what h2 has queued if the socket takes it at once, with no trip through the
        scheduler (gateway/io/fast_io.py); True when nothing is left to write. False means
        a write is in progress or the socket took only part: `flush()` finishes the job."""
        if self._send_lock.locked() or self._unsent:
            return False  # frames must leave in h2's order: behind the bytes still owed
        if self.broken:
            raise self._lost_error("HTTP/2 connection is broken")
        data = self.h2.data_to_send()
        if not data:
            return True
        try:
            sent = send_now(self.stream, data)
        except OSError as exc:
            self.broken = True
            raise self._lost_error(f"HTTP/2 write failed: {exc!r}") from exc
        self.bytes_sent += sent
        if sent < len(data):
            self._unsent = data[sent:]
            return False
        return True

    async def flush(self, extra: bytes = b"") -> None:
        """Writes whatever h2 has queued (plus `extra` raw frames after it).

        The bytes taken from h2 may hold other streams' frames, and HPACK makes every HEADERS
        frame depend on all before it: a write cut short by one stream's cancellation would
        corrupt the whole connection. So the write is shielded from cancellation and bounded
        by WRITE_TIMEOUT instead; a peer that takes no bytes for that long is dropped.
        """
        if not extra and self.flush_now():
            return
        async with self._send_lock:
            if self.broken:
                raise self._lost_error("HTTP/2 connection is broken")
            # Bytes the socket did not take at once go first: frames leave in h2's order.
            data = self._unsent + self.h2.data_to_send() + extra
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
        """Called by the reader on WINDOW_UPDATE or SETTINGS: wakes blocked senders."""
        self._window_changed.set()
        self._window_changed = trio.Event()

    async def send_data(
        self, stream_id: int, data: bytes, end_stream: bool, window_timeout: float
    ) -> None:
        """Sends a body chunk, never past the flow-control windows."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id), len(view))
            size = min(window, self.h2.max_outbound_frame_size)
            if size <= 0:
                # What is queued (this stream's HEADERS, other streams' frames) need not
                # wait for this window: HEADERS are not flow controlled.
                await self.flush()
                with trio.move_on_after(window_timeout) as scope:
                    await self._window_changed.wait()
                if scope.cancelled_caught:
                    raise FlowControlTimeout(f"stream {stream_id}: window closed too long")
                continue
            piece, view = view[:size], view[size:]
            # The last frame carries END_STREAM: one frame and one write, not two.
            self.h2.send_data(stream_id, bytes(piece), end_stream=end_stream and not view)
            if self._guard is not None:
                self._guard.data_frame_sent()
            await self.flush()
        if end_stream and not data:
            self.h2.end_stream(stream_id)
            await self.flush()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Credits `size` received bytes back to the peer (stream and connection)."""
        if size:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                pass  # connection already closed: nothing left to credit

    def release(self) -> None:
        """The connection is over (its socket is its owner's to close): frees h2's state at
        once. h2 keeps a table of its own bound methods, one per frame type, and that cycle
        would hold each closed connection, HPACK tables and streams included, until the
        cyclic GC runs, which `gateway serve` makes rare (cli._tune_gc). Emptying the table
        lets reference counting free it all; nothing can be received after this."""
        table = getattr(self.h2, "_frame_dispatch_table", None)
        if table is not None:  # h2 4.x; tests/e2e/test_churn.py notices if it goes away
            table.clear()

    def reset(self, stream_id: int, error_code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, error_code)
        except h2.exceptions.ProtocolError:
            pass  # already closed on both sides, or by the peer: nothing to reset
