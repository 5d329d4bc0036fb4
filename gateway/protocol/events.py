"""Codec-neutral stream events: what a codec tells the connection manager and the router.

Every event names its stream, so one vocabulary serves HTTP/1.1 (stream ids count requests
on a connection) and HTTP/2 (the wire's stream ids). The HCM, the filters and the router
never see an httptools or h2 object.
"""

import attrs

from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead


@attrs.frozen
class RequestHeaders:
    stream_id: int
    head: RequestHead
    #: True when no body follows.
    end_stream: bool
    #: The declared body length, or None when the body is chunked (or absent).
    content_length: int | None


@attrs.frozen
class ResponseHeaders:
    stream_id: int
    head: ResponseHead
    end_stream: bool


@attrs.frozen
class Data:
    stream_id: int
    data: bytes


@attrs.frozen
class EndStream:
    """The message's body is complete; trailers, if the peer sent any, come with it."""

    stream_id: int
    trailers: HeaderMap | None = None


@attrs.frozen
class ConnectionEnded:
    """The peer closed its side of the connection."""


class NeedData:
    """The codec needs more bytes before it can produce an event."""


class Paused:
    """The codec holds the next message until the current exchange is finished."""


NEED_DATA = NeedData()
PAUSED = Paused()


@attrs.frozen
class StreamReset:
    """HTTP/2: the stream was reset, by the peer (RST_STREAM) or by the codec for the
    peer's protocol error on it; either way the peer's doing."""

    stream_id: int
    error_code: int


@attrs.frozen
class PeerLimitsChanged:
    """HTTP/2: the peer opened a flow-control window or changed its SETTINGS: senders
    waiting for window, and a pool waiting for stream capacity, look again."""


@attrs.frozen
class GoAway:
    """HTTP/2: the peer is leaving; streams above `last_stream_id` were never processed."""

    last_stream_id: int
    error_code: int


@attrs.frozen
class PingAcked:
    """HTTP/2: the peer answered our PING."""
