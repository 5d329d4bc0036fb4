"""What one HTTP/2 peer may make the gateway do: the limits h2 does not keep itself. No I/O.

A worker is one event loop, so a peer that makes the gateway spend CPU on frames that carry
no request (PINGs, SETTINGS, PRIORITY, empty DATA, WINDOW_UPDATEs, streams opened only to be
reset) stalls every other connection on it. Envoy bounds each of these; so does this
module, with Envoy's names and defaults:

- `max_outbound_control_frames`: control frames (PING and SETTINGS acknowledgements,
  RST_STREAM) queued for a peer and not yet written. A peer that floods control frames
  faster than it reads their answers reaches it.
- `max_consecutive_inbound_frames_with_empty_payload`: DATA frames with no data and no
  END_STREAM, in a row.
- `max_inbound_priority_frames_per_stream`: PRIORITY frames, per stream the peer opened.
- `max_inbound_window_update_frames_per_data_frame_sent`: WINDOW_UPDATE frames, per DATA
  frame the gateway sent (and two per stream opened).
- Premature resets: a stream reset (by either side: a peer can make the gateway reset
  streams, "MadeYouReset") before it lived `premature_reset_min_stream_lifetime`. Once at
  least half of the streams closed on a connection are premature (counted over at least
  `premature_reset_total_stream_count` streams, or as soon as the count could no longer
  fall under half of it), the connection is closed.

Crossing any of them: GOAWAY ENHANCE_YOUR_CALM and close, counted by reason.

Three limits need a hook into h2 itself: `CappedEncoder` keeps the HPACK table we encode
with at 4096 bytes whatever the peer allows, `StreamLimitSettings` lets the connection refuse
streams beyond SETTINGS_MAX_CONCURRENT_STREAMS one by one (REFUSED_STREAM; a client may open
them before it has seen our SETTINGS) where h2 would end the connection, and
`HeaderBlockBuffer` bounds a header block spread over CONTINUATION frames by
SETTINGS_MAX_HEADER_LIST_SIZE instead of 64 frames of any size.
"""

import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import hyperframe.frame

from gateway.config.model import Http2ProtocolOptions

#: The largest HPACK table we keep for a peer's decoder, whatever size it allows: encoding
#: searches the table, so a peer announcing 2^31-1 would make every header block slower
#: (nghttp2 and Go cap it at 4096 too).
MAX_ENCODER_TABLE_SIZE = 4096


class CappedEncoder(hpack.Encoder):
    """h2 sets the encoder's table to whatever size the peer's SETTINGS allow; an encoder
    may use less (RFC 7541 4.2), and this one never uses more than MAX_ENCODER_TABLE_SIZE."""

    @property
    def header_table_size(self) -> int:
        return int(self.header_table.maxsize)

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        hpack.Encoder.header_table_size.fset(self, min(value, MAX_ENCODER_TABLE_SIZE))  # type: ignore[attr-defined]


class FloodDetected(h2.exceptions.DenialOfServiceError):
    """A peer crossed one of this module's limits; `reason` names the stat."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason.replace("_", " "))
        self.reason = reason


class StreamLimitSettings(h2.settings.Settings):
    """Our SETTINGS as sent, but with no stream limit for h2 to enforce: h2 would answer
    one stream too many with GOAWAY for all of them. The connection refuses the extra
    streams itself (RFC 9113 5.1.2 allows a stream error)."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2**31

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class HeaderBlockBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer with a header block bounded in bytes: h2 joins up to 64 CONTINUATION
    frames of any size (64 x max_frame_size) before it decodes a byte."""

    def __init__(self, *, server: bool, max_block_size: int) -> None:
        super().__init__(server=server)
        self._max_block_size = max_block_size
        self._block_size = 0

    def _update_header_buffer(
        self, f: hyperframe.frame.Frame | None
    ) -> hyperframe.frame.Frame | None:
        if isinstance(f, hyperframe.frame.HeadersFrame | hyperframe.frame.ContinuationFrame):
            self._block_size = len(f.data) + (self._block_size if self._headers_buffer else 0)
            if self._block_size > self._max_block_size:
                raise FloodDetected("header_overflow")
        return super()._update_header_buffer(f)


class FloodGuard:
    """Counts what a peer makes the gateway do on one connection; `check()` raises
    FloodDetected when a limit is crossed."""

    __slots__ = (
        "_closed_streams",
        "_consecutive_empty",
        "_data_frames_sent",
        "_options",
        "_outbound_control",
        "_premature_resets",
        "_priority_frames",
        "_streams_opened",
        "_window_updates",
    )

    def __init__(self, options: Http2ProtocolOptions) -> None:
        self._options = options
        self._outbound_control = 0
        self._consecutive_empty = 0
        self._priority_frames = 0
        self._streams_opened = 0
        self._window_updates = 0
        self._data_frames_sent = 0
        self._closed_streams = 0
        self._premature_resets = 0

    def received(self, events: list[h2.events.Event]) -> None:
        """Counts the frames behind one read's events; raises FloodDetected."""
        options = self._options
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                assert isinstance(event, h2.events.DataReceived)
                if event.flow_controlled_length or event.stream_ended is not None:
                    self._consecutive_empty = 0
                else:
                    self._consecutive_empty += 1
                    if (
                        self._consecutive_empty
                        > options.max_consecutive_inbound_frames_with_empty_payload
                    ):
                        raise FloodDetected("inbound_empty_frames_flood")
            elif kind is h2.events.RequestReceived:
                self._streams_opened += 1
                self._consecutive_empty = 0
            elif kind is h2.events.PingReceived or kind is h2.events.RemoteSettingsChanged:
                self._outbound_control += 1  # h2 queued the ACK
            elif kind is h2.events.PriorityUpdated:
                self._priority_frames += 1
                limit = options.max_inbound_priority_frames_per_stream
                if self._priority_frames > limit * (1 + self._streams_opened):
                    raise FloodDetected("inbound_priority_frames_flood")
            elif kind is h2.events.WindowUpdated:
                self._window_updates += 1
                # Envoy's allowance: two per stream opened (stream and connection window),
                # and `limit` per DATA frame sent, two ways.
                limit = options.max_inbound_window_update_frames_per_data_frame_sent
                allowed = 1 + 2 * (self._streams_opened + limit * self._data_frames_sent)
                if self._window_updates > allowed:
                    raise FloodDetected("inbound_window_update_frames_flood")
        if self._outbound_control > options.max_outbound_control_frames:
            raise FloodDetected("outbound_control_flood")

    def reset_sent(self) -> None:
        self._outbound_control += 1

    def data_frame_sent(self) -> None:
        self._data_frames_sent += 1

    def written(self) -> None:
        """Everything queued has been written: the peer read its answers."""
        self._outbound_control = 0

    def stream_closed(self, *, reset: bool, lifetime: float) -> None:
        """Premature reset accounting, as Envoy's; raises FloodDetected."""
        self._closed_streams += 1
        if reset and lifetime < self._options.premature_reset_min_stream_lifetime:
            self._premature_resets += 1
        limit = self._options.premature_reset_total_stream_count
        # Before `limit` streams have closed, the verdict is already certain once half of
        # `limit` were premature: even if every later stream is good, the ratio will hold.
        judged = max(self._closed_streams, limit)
        if self._premature_resets * 2 >= judged:
            raise FloodDetected("too_many_premature_resets")
