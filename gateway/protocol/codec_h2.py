"""The HTTP/2 codec both sides share: bytes in, gateway events out; heads and bodies in,
bytes to send out. No I/O.

Theory of operation
-------------------
h2 keeps the state machines (connection and streams), HPACK and the flow-control
arithmetic; this module is the one place the gateway speaks h2. It turns h2's events into
the gateway's own vocabulary (`gateway.protocol.events`, every event naming its stream) and
the gateway's heads into HTTP/2 header lists, so the downstream connection
(`gateway.http.conn_h2`) and the upstream client (`gateway.clusters.upstream_h2`) never
translate anything themselves, and neither imports h2.

Both roles are one class: a server codec reads `RequestHeaders` and writes response heads,
a client codec writes request heads and reads `ResponseHeaders`; bodies, trailers, resets,
windows and GOAWAY are the same on both sides.

What the codec does for its user, so no caller can get it wrong:

* An end of stream is one event. h2 reports END_STREAM separately from the HEADERS, DATA or
  trailers that carried it; the codec folds it in: `RequestHeaders.end_stream`,
  `ResponseHeaders.end_stream`, or `EndStream(trailers)`.
* Padding is credited back at once: it is never forwarded, so waiting for it would leak the
  window. Data is credited by the caller (`acknowledge`) once it was forwarded: that is the
  end-to-end backpressure (h2#1210 for data nobody will read: credit it at once).
* `send_data` queues no more than the windows and the peer's frame size allow and says how
  much it took; the caller waits for `PeerLimitsChanged` to send the rest (h2#177).
* A server codec counts what the peer makes the gateway do (`h2_guard.FloodGuard`) and
  raises `FloodDetected`; `close()` then queues the GOAWAY.
* h2's errors become two: `H2ConnectionError` (the peer broke the protocol: h2 has queued a
  GOAWAY, flush and close) and `StreamGone` (a send on a stream the peer reset or closed).
"""

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from gateway.config.model import Http2ProtocolOptions
from gateway.protocol.events import (
    Data,
    EndStream,
    GoAway,
    PeerLimitsChanged,
    PingAcked,
    RequestHeaders,
    ResponseHeaders,
    StreamReset,
)
from gateway.protocol.field_lists import request_head, response_head, wire
from gateway.protocol.h2_guard import (
    CappedEncoder,
    FloodDetected,
    FloodGuard,
    HeaderBlockBuffer,
    StreamLimitSettings,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: Error codes callers name (RFC 9113 7).
NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
CANCEL = h2.errors.ErrorCodes.CANCEL
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM

#: The highest HTTP/2 stream id: a GOAWAY naming it refuses no stream the peer sent.
MAX_STREAM_ID = 2**31 - 1

H2Event = (
    RequestHeaders
    | ResponseHeaders
    | Data
    | EndStream
    | StreamReset
    | PeerLimitsChanged
    | GoAway
    | PingAcked
)


class H2ConnectionError(Exception):
    """The peer broke HTTP/2; h2 has queued the GOAWAY that says how: flush, then close."""


class StreamGone(Exception):
    """A send on a stream the peer reset or closed, or after the connection ended."""


#: Header values the gateway makes new for every request. grpc-timeout too: the router
#: forwards the time left, new to the microsecond on every call; indexed, it filled the
#: table with ~76 stale deadlines that every later header was searched against (hpack
#: searches the dynamic table entry by entry): 90 -> 49 us to encode a gRPC call's head.
_PER_REQUEST_VALUES = frozenset({b"x-request-id", b"traceparent", b"grpc-timeout"})
#: Values kept out of the HPACK table, so that a peer sharing the connection cannot learn
#: them by probing the compression (CRIME-style): credentials, and cookies short enough to
#: guess (h2's own rule, which its outbound normalisation applied).
_SECRETS = frozenset({b"authorization", b"proxy-authorization"})
_SHORT_COOKIE = 20


class _Encoder(CappedEncoder):
    """HPACK as h2 does it, with two rules of the gateway's. Values new on every request
    (x-request-id, traceparent, grpc-timeout) go out as literals, never indexed and not
    Huffman-coded: indexing them would only evict table entries that do repeat (and slow
    every search of the table), and Huffman-coding them, in pure Python, was half of what
    sending a request upstream cost (bench/h2_codec_cost.py: about 125 -> 65 us per
    request). Secrets are never indexed."""

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        name = to_add[0]
        if name in _PER_REQUEST_VALUES:
            return super().add(to_add, True, False)
        if name in _SECRETS or (name == b"cookie" and len(to_add[1]) < _SHORT_COOKIE):
            sensitive = True
        return super().add(to_add, sensitive, huffman)


def _new_connection(
    *, client_side: bool, options: Http2ProtocolOptions
) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        # What we send was checked where it came in, and by `_wire` (and `_Encoder` keeps
        # secrets out of the table, as h2's normalisation did).
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.encoder = _Encoder()
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


class H2Codec:
    """One HTTP/2 connection, either role: `receive_data` turns bytes into events, the
    `send_*` calls queue frames, `data_to_send` hands over the bytes to write."""

    __slots__ = ("_guard", "_h2", "_scheme", "_window")

    def __init__(self, *, client_side: bool, options: Http2ProtocolOptions, scheme: str) -> None:
        self._h2 = _new_connection(client_side=client_side, options=options)
        #: The scheme a server stamps on requests (the connection's own), or a client sends.
        self._scheme = scheme
        #: A server judges its peer (the client); an upstream is trusted not to flood.
        self._guard = None if client_side else FloodGuard(options)
        self._window = options.initial_connection_window_size

    def initiate(self) -> None:
        """Queues the preface/SETTINGS and widens the connection window to our setting."""
        self._h2.initiate_connection()
        extra = self._window - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[H2Event]:
        """The events in `data`. Raises H2ConnectionError (GOAWAY queued) or, for a server,
        FloodDetected (call `close(ENHANCE_YOUR_CALM, ...)`)."""
        try:
            events = self._h2.receive_data(data)
        except FloodDetected:
            raise
        except h2.exceptions.ProtocolError as exc:
            raise H2ConnectionError(str(exc)) from exc
        if self._guard is not None:
            self._guard.received(events)
        return self._translate(events)

    def _translate(self, events: list[h2.events.Event]) -> list[H2Event]:
        out: list[H2Event] = []
        #: StreamEnded events already reported with the headers or trailers that carried them.
        folded: list[h2.events.StreamEnded] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                data = event.data
                # Padding is never forwarded: credit it now. The data, once forwarded.
                padding = event.flow_controlled_length - len(data)
                if padding:
                    self.acknowledge(event.stream_id, padding)
                if data:
                    out.append(Data(event.stream_id, data))
            elif isinstance(event, h2.events.StreamEnded):
                if event not in folded:
                    out.append(EndStream(event.stream_id))
            elif isinstance(event, h2.events.RequestReceived):
                if event.stream_ended is not None:
                    folded.append(event.stream_ended)
                request = request_head(event.headers, self._scheme, "2")
                length = request.headers.get("content-length")
                end_stream = event.stream_ended is not None
                # h2 has checked that a content-length is a number.
                size = int(length) if length else None
                out.append(RequestHeaders(event.stream_id, request, end_stream, size))
            elif isinstance(event, h2.events.ResponseReceived):
                if event.stream_ended is not None:
                    folded.append(event.stream_ended)
                response = response_head(event.headers)
                end_stream = event.stream_ended is not None
                out.append(ResponseHeaders(event.stream_id, response, end_stream))
            elif isinstance(event, h2.events.TrailersReceived):
                if event.stream_ended is not None:
                    folded.append(event.stream_ended)
                out.append(EndStream(event.stream_id, HeaderMap.from_raw(event.headers)))
            elif isinstance(event, h2.events.StreamReset):
                out.append(StreamReset(event.stream_id, int(event.error_code)))
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                out.append(PeerLimitsChanged())
            elif isinstance(event, h2.events.ConnectionTerminated):
                out.append(GoAway(event.last_stream_id or 0, int(event.error_code or 0)))
            elif isinstance(event, h2.events.PingAckReceived):
                out.append(PingAcked())
        return out

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Credits `size` received bytes back to the peer (stream and connection)."""
        if size:
            try:
                self._h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                pass  # connection already closed: nothing left to credit

    # -- sending ---------------------------------------------------------------------------

    def send_request_head(self, stream_id: int, head: RequestHead, *, end_stream: bool) -> None:
        pseudo = [
            (b":method", head.method.encode()),
            (b":scheme", self._scheme.encode()),
            (b":authority", head.authority.encode("latin-1")),
            (b":path", head.path.encode("latin-1")),
        ]
        self._send_headers(stream_id, wire(pseudo, head.headers), end_stream)

    def send_response_head(self, stream_id: int, head: ResponseHead, *, end_stream: bool) -> None:
        pseudo = [(b":status", str(head.status).encode())]
        self._send_headers(stream_id, wire(pseudo, head.headers), end_stream)

    def send_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        self._send_headers(stream_id, wire([], trailers), end_stream=True)

    def _send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        try:
            self._h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise StreamGone(str(exc)) from exc

    def send_data(self, stream_id: int, data: memoryview, *, end_stream: bool) -> int:
        """Queues as much of `data` as the windows allow, in frames of at most the peer's
        frame size, END_STREAM on the last if `end_stream` and all of it fit. Returns how
        many bytes it took: 0 means the window is shut (wait for PeerLimitsChanged)."""
        h2conn = self._h2
        try:
            window = h2conn.local_flow_control_window(stream_id)
            frame_size = h2conn.max_outbound_frame_size
            taken = 0
            total = len(data)
            while taken < total and window > 0:
                size = min(window, frame_size, total - taken)
                last = taken + size == total
                h2conn.send_data(
                    stream_id, bytes(data[taken : taken + size]), end_stream=end_stream and last
                )
                if self._guard is not None:
                    self._guard.data_frame_sent()
                taken += size
                window -= size
            if end_stream and not total:
                h2conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError as exc:
            raise StreamGone(str(exc)) from exc
        return taken

    def end_stream(self, stream_id: int) -> None:
        try:
            self._h2.end_stream(stream_id)
        except h2.exceptions.ProtocolError as exc:
            raise StreamGone(str(exc)) from exc

    def reset(self, stream_id: int, error_code: int) -> None:
        try:
            self._h2.reset_stream(stream_id, error_code)
        except h2.exceptions.ProtocolError:
            return  # already closed on both sides, or by the peer: nothing to reset
        if self._guard is not None:
            self._guard.reset_sent()

    def ping(self, opaque: bytes) -> None:
        try:
            self._h2.ping(opaque)
        except h2.exceptions.ProtocolError as exc:
            raise StreamGone(str(exc)) from exc

    def close(
        self, error_code: int = NO_ERROR, reason: bytes = b"", last_stream_id: int | None = None
    ) -> bool:
        """Queues h2's GOAWAY; False when the connection was already closed (a GOAWAY of
        h2's own, for a protocol error, is queued already)."""
        if self.closed:
            return False
        self._h2.close_connection(
            error_code, additional_data=reason or None, last_stream_id=last_stream_id
        )
        return True

    @staticmethod
    def goaway_frame(last_stream_id: int) -> bytes:
        """A graceful GOAWAY as raw bytes: h2 allows nothing after its own GOAWAY, so the
        drain's first GOAWAY (and its last-stream one) are written behind h2's frames, and
        h2's own follows when the connection closes."""
        frame = hyperframe.frame.GoAwayFrame(
            stream_id=0, last_stream_id=last_stream_id, error_code=0
        )
        return bytes(frame.serialize())

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    # -- connection state ------------------------------------------------------------------

    def next_stream_id(self) -> int:
        return int(self._h2.get_next_available_stream_id())

    @property
    def peer_max_concurrent_streams(self) -> int:
        return int(self._h2.remote_settings.max_concurrent_streams)

    @property
    def closed(self) -> bool:
        return self._h2.state_machine.state is h2.connection.ConnectionState.CLOSED

    # -- the flood guard's other inputs (server side) ---------------------------------------

    def written(self) -> None:
        """Everything queued was written: the peer read its answers."""
        if self._guard is not None:
            self._guard.written()

    def stream_closed(self, *, reset: bool, lifetime: float) -> None:
        """A stream ended (reset, if before both sides finished); raises FloodDetected."""
        if self._guard is not None:
            self._guard.stream_closed(reset=reset, lifetime=lifetime)

    def release(self) -> None:
        """The connection is over: frees h2's state at once. h2 keeps a table of its own
        bound methods, one per frame type, and that cycle would hold each closed
        connection, HPACK tables and streams included, until the cyclic GC runs, which
        `gateway serve` makes rare (cli._tune_gc). Emptying the table lets reference
        counting free it all; nothing can be received after this."""
        table = getattr(self._h2, "_frame_dispatch_table", None)
        if table is not None:  # h2 4.x; tests/e2e/test_churn.py notices if it goes away
            table.clear()
