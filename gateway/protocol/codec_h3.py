"""The HTTP/3 codec: datagrams in, gateway events out; heads and bodies in, datagrams to
send out. No I/O, no clock of its own: every call that can change the connection takes
`now`, the caller's clock (trio's, so a MockClock drives it too).

Theory of operation
-------------------
aioquic keeps the state machines: QUIC (`QuicConnection`: packets, TLS 1.3, loss
recovery, congestion control, connection ids) and HTTP/3 on top (`H3Connection`: frames,
QPACK). This module is the one place the gateway speaks aioquic. It turns aioquic's
events into the gateway's vocabulary (`gateway.protocol.events`, the same events HTTP/2
produces, every one naming its stream) and the gateway's heads into HTTP/3 field lists,
so the connection (`gateway.http.conn_h3`) translates nothing and never imports aioquic.

What the codec does for its user, so no caller can get it wrong:

* End-to-end flow control. aioquic grants more window as data arrives (it doubles a
  window once half of it was received), whether or not anyone read it; a proxy must
  grant it as bytes are *forwarded*, or a client can park gigabytes in the gateway behind
  a slow upstream. `_Quic` grants a stream `initial_stream_window_size` past what the
  gateway forwarded, and the connection `initial_connection_window_size` past the sum;
  the caller credits bytes with `acknowledge`, as with the HTTP/2 codec.
* Sending is bounded too: aioquic queues whatever it is given. `send_data` takes no
  more than `SEND_BUFFER` unacknowledged bytes per stream and says how much it took; the
  caller waits for the peer's acknowledgements (`PeerLimitsChanged`) to send the rest.
* A frame HTTP/3 buffers whole (a HEADERS frame, an unknown frame type) may not grow past
  the listener's header limit: the stream is reset with H3_EXCESSIVE_LOAD.
* An end of stream is one event: `RequestHeaders.end_stream` or `EndStream(trailers)`.
* Connection ids come and go as `ConnectionIdsChanged`, for the listener's routing table.
"""

import attrs
from aioquic._buffer import Buffer
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3_events
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import (
    NetworkAddress,
    QuicConnection,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.packet import QuicErrorCode, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from gateway.config.model import QuicProtocolOptions
from gateway.protocol.events import (
    Data,
    EndStream,
    GoAway,
    PeerLimitsChanged,
    RequestHeaders,
    StreamReset,
)
from gateway.protocol.field_lists import request_head, wire
from gateway.protocol.headers import HeaderMap, ResponseHead

#: HTTP/3 error codes callers name (RFC 9114 8.1).
H3_NO_ERROR = int(ErrorCode.H3_NO_ERROR)
H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)
H3_REQUEST_REJECTED = int(ErrorCode.H3_REQUEST_REJECTED)
H3_EXCESSIVE_LOAD = int(ErrorCode.H3_EXCESSIVE_LOAD)

#: Unacknowledged bytes one stream may have queued for the peer: enough to keep a
#: bandwidth-delay product in flight, little enough that 100 streams hold ~25 MiB at most.
SEND_BUFFER = 256 * 1024
#: Control streams (HTTP/3's own, QPACK's two, and a few the peer may add for extensions
#: we ignore): the peer may open no more than this many unidirectional streams, each with
#: a small window, so ignored streams cannot hold memory.
_MAX_UNI_STREAMS = 16
_UNI_STREAM_WINDOW = 64 * 1024


def error_code_name(code: int, *, application: bool) -> str:
    """An error code's name, for stats: an HTTP/3 one ("H3_EXCESSIVE_LOAD") if the
    application closed the connection, else QUIC's ("NO_ERROR", "PROTOCOL_VIOLATION");
    the two number spaces overlap. A code neither defines is its number."""
    codes = ErrorCode if application else QuicErrorCode
    try:
        return str(codes(code).name)
    except ValueError:
        return f"0x{code:x}"


class StreamGone(Exception):
    """A send on a stream the peer reset or stopped, or after the connection ended."""


@attrs.frozen
class ConnectionIdsChanged:
    """Connection ids the listener must route to this connection (`issued`) or no longer
    (`retired`)."""

    issued: tuple[bytes, ...] = ()
    retired: tuple[bytes, ...] = ()


@attrs.frozen
class HandshakeDone:
    """TLS is done: requests may follow. `version` is the QUIC version agreed on (1 or
    2, by RFC number: RFC 9000's or RFC 9369's)."""

    version: int


@attrs.frozen
class ConnectionClosed:
    """The connection is over (closed by either side, or idle): nothing more will come.
    `by_peer` tells whose `error_code` (a QUIC transport or HTTP/3 code) it was."""

    error_code: int
    reason: str
    by_peer: bool
    #: An application (HTTP/3) close, whose code is HTTP/3's, not QUIC's.
    application: bool

    @property
    def error_name(self) -> str:
        return error_code_name(self.error_code, application=self.application)


H3Event = (
    RequestHeaders
    | Data
    | EndStream
    | StreamReset
    | PeerLimitsChanged
    | GoAway
    | ConnectionIdsChanged
    | HandshakeDone
    | ConnectionClosed
)


class _Quic(QuicConnection):
    """aioquic's connection with window updates that follow what the gateway forwarded
    (see the module's docstring), and a stream limit of our choosing.

    aioquic decides in `_write_stream_limits` and `_write_connection_limits`, as it builds
    each packet, whether to raise a window (its rule: double it once half was received).
    Here the new window is computed first, from what was forwarded, and aioquic's doubling
    rule is shown a counter of zero so that it stays out; aioquic then writes the frame as
    it would have. The frame writing stays aioquic's own."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None,
        options: QuicProtocolOptions,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self._stream_window = options.initial_stream_window_size
        self._connection_window = options.initial_connection_window_size
        # Sent in the transport parameters, so set before the handshake.
        self._local_max_data.value = self._local_max_data.sent = self._connection_window
        self._local_max_stream_data_bidi_remote = self._stream_window
        for limit, value in (
            (self._local_max_streams_bidi, options.max_concurrent_streams),
            (self._local_max_streams_uni, _MAX_UNI_STREAMS),
        ):
            # `sent` too: it is what the transport parameters will have said, and what
            # aioquic raises MAX_STREAMS from as streams end.
            limit.value = limit.sent = value
        self._local_max_stream_data_uni = _UNI_STREAM_WINDOW
        #: Bytes delivered to the gateway, per stream and in all.
        self.delivered: dict[int, int] = {}
        self.delivered_total = 0
        #: Bytes delivered but not yet forwarded (credited), per stream and in all.
        self.unforwarded: dict[int, int] = {}
        self.unforwarded_total = 0
        #: The peer sent CONNECTION_CLOSE (aioquic reports every close alike).
        self.closed_by_peer = False

    def _handle_connection_close_frame(
        self, context: QuicReceiveContext, frame_type: int, buf: Buffer
    ) -> None:
        self.closed_by_peer = self._close_event is None
        super()._handle_connection_close_frame(context, frame_type, buf)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        sid = stream.stream_id
        if sid is not None and sid % 4 == 0 and stream.max_stream_data_local:  # a request
            forwarded = self.delivered.get(sid, 0) - self.unforwarded.get(sid, 0)
            target = forwarded + self._stream_window
            # Batched: a MAX_STREAM_DATA once half the window was used, not per packet.
            if target - stream.max_stream_data_local >= self._stream_window // 2:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return  # nothing to send: the common case, for every stream, every packet
        receiver = stream.receiver
        seen, receiver.highest_offset = receiver.highest_offset, 0
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = seen

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        max_data = self._local_max_data
        target = self.delivered_total - self.unforwarded_total + self._connection_window
        if target - max_data.value >= self._connection_window // 2:
            max_data.value = target
        used, max_data.used = max_data.used, 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used


class H3Codec:
    """One HTTP/3 connection, server side: `receive_datagram` turns datagrams into events,
    the `send_*` calls queue frames, `datagrams_to_send` hands over what to write and
    `timer` says when to call `handle_timer`."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None,
        options: QuicProtocolOptions,
        max_header_bytes: int,
        scheme: str = "https",
    ) -> None:
        self._quic = _Quic(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            options=options,
        )
        self._h3: H3Connection | None = None
        self._scheme = scheme
        self._max_header_bytes = max_header_bytes
        #: Request streams whose head was delivered (the next HEADERS are trailers).
        self._open: set[int] = set()
        self._closed: ConnectionClosed | None = None

    @property
    def host_cid(self) -> bytes:
        """The connection id the gateway chose first (routed to this connection)."""
        return self._quic.host_cid

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def closing(self) -> bool:
        """A close was queued or received: the connection is on its way out."""
        return self._closed is not None or self._quic._close_event is not None

    @property
    def handshake_complete(self) -> bool:
        return self._h3 is not None

    # -- receiving -------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> list[H3Event]:
        self._quic.receive_datagram(data, addr, now)
        return self._drain_events()

    def handle_timer(self, now: float) -> list[H3Event]:
        """Loss detection, acknowledgements, pacing and the idle timeout: call when `timer`
        says."""
        self._quic.handle_timer(now)
        return self._drain_events()

    def timer(self) -> float | None:
        return self._quic.get_timer()

    def _drain_events(self) -> list[H3Event]:
        out: list[H3Event] = []
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, quic_events.StreamDataReceived):
                if event.stream_id % 4 == 0:
                    quic.delivered[event.stream_id] = quic.delivered.get(event.stream_id, 0) + len(
                        event.data
                    )
                    quic.delivered_total += len(event.data)
            elif isinstance(event, quic_events.ProtocolNegotiated):
                if event.alpn_protocol == "h3" and self._h3 is None:
                    self._h3 = H3Connection(quic)
                continue
            elif isinstance(event, quic_events.HandshakeCompleted):
                out.append(
                    HandshakeDone(2 if quic._version == QuicProtocolVersion.VERSION_2 else 1)
                )
                continue
            elif isinstance(event, quic_events.ConnectionIdIssued):
                out.append(ConnectionIdsChanged(issued=(event.connection_id,)))
                continue
            elif isinstance(event, quic_events.ConnectionIdRetired):
                out.append(ConnectionIdsChanged(retired=(event.connection_id,)))
                continue
            elif isinstance(event, quic_events.ConnectionTerminated):
                out.append(self._on_terminated(event))
                continue
            if self._h3 is None:
                continue
            for h3_event in self._h3.handle_event(event):
                self._translate(h3_event, out)
            if isinstance(event, quic_events.StreamDataReceived):
                self._check_buffered(event.stream_id)
            elif (
                isinstance(event, quic_events.StreamReset | quic_events.StopSendingReceived)
                and event.stream_id % 4 == 0
            ):
                # Either way the client gave the exchange up (a STOP_SENDING after the
                # request ended means it wants no response).
                self._open.discard(event.stream_id)
                out.append(StreamReset(event.stream_id, event.error_code))
        # Acknowledgements may have freed room in send buffers, settings may have come.
        out.append(PeerLimitsChanged())
        return out

    def _translate(self, event: h3_events.H3Event, out: list[H3Event]) -> None:
        if isinstance(event, h3_events.HeadersReceived):
            sid = event.stream_id
            if sid not in self._open:
                self._open.add(sid)
                request = request_head(event.headers, self._scheme, "3")
                length = request.headers.get("content-length")
                # aioquic has checked that a content-length is a number.
                size = int(length) if length else None
                out.append(RequestHeaders(sid, request, event.stream_ended, size))
            else:
                trailers = HeaderMap.from_raw(event.headers)
                out.append(EndStream(sid, trailers))
            if event.stream_ended:
                self._open.discard(sid)
        elif isinstance(event, h3_events.DataReceived):
            sid = event.stream_id
            if event.data:
                self._quic.unforwarded[sid] = self._quic.unforwarded.get(sid, 0) + len(event.data)
                self._quic.unforwarded_total += len(event.data)
                out.append(Data(sid, event.data))
            if event.stream_ended:
                self._open.discard(sid)
                out.append(EndStream(sid))

    def _check_buffered(self, stream_id: int) -> None:
        """A frame HTTP/3 holds whole until it is complete (HEADERS, or a type it does not
        know) may not outgrow the header limit: the window is credited as bytes reach the
        HTTP/3 layer, so without this a client could park any amount there."""
        assert self._h3 is not None
        stream = self._h3._stream.get(stream_id)
        if stream is not None and len(stream.buffer) > self._max_header_bytes:
            stream.buffer = b""
            self.reset(stream_id, H3_EXCESSIVE_LOAD)
            self._open.discard(stream_id)

    def _on_terminated(self, event: quic_events.ConnectionTerminated) -> ConnectionClosed:
        if self._closed is None:
            by_peer = self._quic.closed_by_peer
            self._closed = ConnectionClosed(
                event.error_code, event.reason_phrase, by_peer, application=event.frame_type is None
            )
        return self._closed

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Credits `size` delivered body bytes: they were forwarded (or will never be)."""
        quic = self._quic
        pending = quic.unforwarded.get(stream_id, 0)
        size = min(size, pending)
        if not size:
            return
        if pending == size:
            del quic.unforwarded[stream_id]
        else:
            quic.unforwarded[stream_id] = pending - size
        quic.unforwarded_total -= size

    def stream_closed(self, stream_id: int) -> None:
        """The gateway is done with a stream: forget its accounting."""
        quic = self._quic
        quic.unforwarded_total -= quic.unforwarded.pop(stream_id, 0)
        quic.delivered.pop(stream_id, None)
        self._open.discard(stream_id)

    # -- sending ---------------------------------------------------------------------------

    def send_response_head(self, stream_id: int, head: ResponseHead, *, end_stream: bool) -> None:
        pseudo = [(b":status", str(head.status).encode())]
        self._send_headers(stream_id, wire(pseudo, head.headers), end_stream)

    def send_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        self._send_headers(stream_id, wire([], trailers), end_stream=True)

    def _send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        h3 = self._writable(stream_id)
        h3.send_headers(stream_id, headers, end_stream=end_stream)

    def send_data(self, stream_id: int, data: memoryview, *, end_stream: bool) -> int:
        """Queues as much of `data` as the stream's send buffer takes (END_STREAM with the
        last of it, if `end_stream` and it all fit). Returns how many bytes it took: 0
        means the buffer is full (wait for PeerLimitsChanged)."""
        h3 = self._writable(stream_id)
        room = SEND_BUFFER - self.send_buffered(stream_id)
        size = max(0, min(room, len(data)))
        last = size == len(data)
        if size or (last and end_stream):
            h3.send_data(stream_id, bytes(data[:size]), end_stream=end_stream and last)
        return size

    def send_buffered(self, stream_id: int) -> int:
        """Bytes queued on a stream and not yet acknowledged by the peer."""
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def _writable(self, stream_id: int) -> H3Connection:
        if self._h3 is None or self._closed is not None:
            raise StreamGone("the HTTP/3 connection is closed")
        stream = self._quic._streams.get(stream_id)
        if stream is None or stream.sender._reset_error_code is not None:
            raise StreamGone(f"HTTP/3 stream {stream_id} was reset")
        return self._h3

    def reset(self, stream_id: int, error_code: int) -> None:
        """Abandons a request stream both ways (RESET_STREAM and STOP_SENDING)."""
        quic = self._quic
        if self._closed is not None or stream_id not in quic._streams:
            return
        quic.reset_stream(stream_id, error_code)
        if not quic._streams[stream_id].receiver.is_finished:
            quic.stop_stream(stream_id, error_code)

    def stop_receiving(self, stream_id: int) -> None:
        """The response is complete and the rest of the request is not wanted: STOP_SENDING
        with H3_NO_ERROR (RFC 9114 4.1.1)."""
        quic = self._quic
        stream = quic._streams.get(stream_id)
        if self._closed is None and stream is not None and not stream.receiver.is_finished:
            quic.stop_stream(stream_id, H3_NO_ERROR)

    def goaway(self, stream_id: int) -> None:
        """Sends GOAWAY: requests on streams from `stream_id` on will not be processed.
        (aioquic has no call for it; the frame goes on HTTP/3's control stream.)"""
        h3 = self._h3
        if h3 is None or self._closed is not None or h3._local_control_stream_id is None:
            return
        frame = encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id))
        self._quic.send_stream_data(h3._local_control_stream_id, frame)

    def close(self, error_code: int = H3_NO_ERROR, reason: str = "") -> None:
        """Closes the connection (CONNECTION_CLOSE with `error_code`)."""
        if self._closed is None:
            self._quic.close(error_code=error_code, reason_phrase=reason)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        return self._quic.datagrams_to_send(now)

    @property
    def ended(self) -> bool:
        """Nothing more will be sent or received: the connection can be forgotten."""
        return self._quic._state is QuicConnectionState.TERMINATED

    def release(self) -> None:
        """The connection is over: frees aioquic's state at once. Its connection object
        holds bound methods of its own (the frame handler table, TLS and loss-recovery
        callbacks), cycles that would keep each closed connection, keys and buffers
        included, until the cyclic GC runs, which `gateway serve` makes rare
        (cli._tune_gc). Emptying it lets reference counting free it all; nothing can be
        sent or received after this (tests/e2e/test_churn.py notices a leak)."""
        self._h3 = None
        self._quic.__dict__.clear()

    def next_request_stream_id(self) -> int:
        """The lowest request stream id the client has not opened: a GOAWAY's argument."""
        used = self._quic._local_max_streams_bidi.used
        return used * 4
