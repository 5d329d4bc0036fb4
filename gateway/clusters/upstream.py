"""What the router needs from an upstream exchange, whatever the protocol underneath.

A pool lends an `UpstreamStream`: for HTTP/1.1 a whole connection, for HTTP/2 one stream of
a shared connection. The router drives it the same way either way.
"""

from typing import Protocol

from gateway.protocol.codec_h1 import ClientEvent
from gateway.protocol.headers import HeaderMap, RequestHead


class UpstreamStream(Protocol):
    #: Set when the upstream ended the exchange without processing it (HTTP/2
    #: REFUSED_STREAM or GOAWAY): safe to retry.
    refused: bool

    async def send_request_head(self, head: RequestHead, end_stream: bool) -> None: ...

    async def send_data(self, data: bytes) -> None: ...

    async def send_end(self, trailers: HeaderMap | None) -> None: ...

    async def send_request(
        self, head: RequestHead, body: bytes, trailers: HeaderMap | None
    ) -> None:
        """The whole request at once, when its body is already here: one write where the
        head, the body and its end would take three."""
        ...

    async def receive_event(self) -> ClientEvent:
        """The next response event (ResponseHeaders, Data, EndStream or ConnectionEnded)."""
        ...

    def next_event_nowait(self) -> ClientEvent:
        """The next event if it is already here, else NEED_DATA; never does I/O."""
        ...
