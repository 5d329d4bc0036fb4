"""The downstream end of a tunnel over one HTTP/2 or HTTP/3 stream: WebSocket over an
extended CONNECT (RFC 8441, RFC 9220). The client's DATA in, ours out, the end of the
stream as the half-close; flow control as for any body."""

from gateway.http.active_stream import ActiveStream, ResponseEncoder, ResponseState


class StreamTunnelEndpoint:
    half_closable = True

    def __init__(self, encoder: ResponseEncoder, active: ActiveStream) -> None:
        self._encoder = encoder
        self._active = active

    async def receive(self) -> bytes:
        while (data := await self._active.receive_body()) is not None:
            if data:
                return data
        return b""

    async def send(self, data: bytes) -> None:
        await self._encoder.encode_data(data, end_stream=False)

    async def send_eof(self) -> None:
        self._active.response_state = ResponseState.DONE
        await self._encoder.encode_data(b"", end_stream=True)
