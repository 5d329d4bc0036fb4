"""The HTTP filter chain's order at the end of a response: each filter sees the end of
the body, then the trailers, and may turn trailers into the body's last bytes."""

from gateway.http.filter import FilterChain, HttpFilter
from gateway.protocol.headers import HeaderMap


class Upper(HttpFilter):
    """Transforms the body: what reaches it at the end is made upper case."""

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        return data.upper() + (b"|end" if end_stream else b"")


class TrailersIntoBody(HttpFilter):
    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        text = b";".join(f"{n}={v}".encode() for n, v in trailers)
        for name, _ in list(trailers):
            trailers.remove(name)
        return text


class TrailerWriter(HttpFilter):
    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        trailers.add("x-seen", "yes")
        return None


async def test_trailers_become_the_last_body_bytes_and_pass_the_filters_before_it() -> None:
    # Encode order is the reverse of the configured order: TrailerWriter, then
    # TrailersIntoBody, then Upper, whose end of body holds the bytes the one before it made.
    chain = FilterChain([Upper(), TrailersIntoBody(), TrailerWriter()])
    trailers = HeaderMap([("grpc-status", "0")])
    tail = await chain.end_with_trailers(trailers)
    assert tail == b"GRPC-STATUS=0;X-SEEN=YES|end"
    assert not trailers


async def test_a_chain_without_end_hooks_leaves_trailers_alone() -> None:
    chain = FilterChain([HttpFilter()])
    assert not chain.sees_response_end
    trailers = HeaderMap([("grpc-status", "0")])
    assert await chain.end_with_trailers(trailers) == b""
    assert list(trailers) == [("grpc-status", "0")]
