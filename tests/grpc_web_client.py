"""A gRPC-Web client written from the wire format (grpc/doc/PROTOCOL-WEB.md) over httpx:
what a browser library sends and reads, over HTTP/1.1 or HTTP/2, binary or `-text`; and the
gateway config the gRPC-Web tests share.

Deliberately independent of the gateway's own codec (gateway/protocol/grpc_web.py): the
`-text` body is encoded per message, padded, as grpc-web's JavaScript client sends it, and
the response is decoded group by group, whatever padding stands where.
"""

import base64
import struct
from collections.abc import AsyncIterator, Iterable

import attrs
import httpx

from tests.config_builder import ConfigBuilder, route

PREFIX = struct.Struct(">BI")
TRAILER_FLAG = 0x80
#: The origin of the page that calls the gateway, as CORS sees it.
ORIGIN = "https://app.example.com"


def web_config(echo_port: int, plain_port: int, origin: str = ORIGIN) -> ConfigBuilder:
    """Listener `edge` runs grpc_web and cors (for `origin`, as docs/configuration.md
    advises for browsers); test.Echo goes to the grpcio server at `echo_port` (with a
    500 ms route timeout when `x-short` is sent), /down.Service/ to a cluster without
    hosts, /status/ and /json to a plain HTTP/1.1 upstream; nothing else has a route."""
    config = ConfigBuilder()
    config.listener("edge", virtual_hosts=["main"], http_filters=["grpc_web", "cors"])
    config.http_filter("grpc_web", "grpc_web")
    config.http_filter(
        "cors",
        "cors",
        allow_origins=[origin],
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"],
        expose_headers=["grpc-status", "grpc-message"],
        max_age="1h",
    )
    echo = {"prefix": "/test.Echo/"}
    config.virtual_host(
        "main",
        route(
            match={**echo, "headers": [{"name": "x-short", "present": True}]},
            cluster="echo",
            timeout="500ms",  # long enough for a stream's first messages on a busy machine
        ),
        route(match=echo, cluster="echo"),
        route("/down.Service/", cluster="nowhere"),
        route("/status/", cluster="plain"),
        route("/json", cluster="plain"),
    )
    config.cluster("echo", echo_port, protocol="http2")
    config.cluster("nowhere", protocol="http2")
    config.cluster("plain", plain_port)
    return config


def content_type(text: bool) -> str:
    return "application/grpc-web-text" if text else "application/grpc-web+proto"


def frame(message: bytes, flag: int = 0) -> bytes:
    return PREFIX.pack(flag, len(message)) + message


def request_body(messages: Iterable[bytes], text: bool) -> bytes:
    """The messages, framed; in `-text` each frame base64-encoded on its own (padded)."""
    frames = [frame(m) for m in messages]
    if text:
        return b"".join(base64.b64encode(f) for f in frames)
    return b"".join(frames)


def decode_text(body: bytes) -> bytes:
    """A `-text` body: groups of 4 characters, each decoded alone (padding may end any)."""
    assert len(body) % 4 == 0, f"base64 body of {len(body)} characters"
    return b"".join(
        base64.b64decode(body[i : i + 4], validate=True) for i in range(0, len(body), 4)
    )


@attrs.frozen
class WebResponse:
    status: int
    headers: httpx.Headers
    messages: list[bytes]
    #: From the trailer frame; empty for a trailers-only response.
    trailers: dict[str, str]
    http_version: str

    @property
    def grpc_status(self) -> str | None:
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))

    @property
    def grpc_message(self) -> str | None:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message"))


def parse_frames(data: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Messages and the trailer frame; the trailer frame must be the last."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        assert not trailers, "bytes after the trailer frame"
        flag, size = PREFIX.unpack_from(data, pos)
        payload = data[pos + PREFIX.size : pos + PREFIX.size + size]
        assert len(payload) == size, "a truncated frame"
        pos += PREFIX.size + size
        if flag & TRAILER_FLAG:
            for line in payload.decode("latin-1").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    assert name == name.lower(), f"trailer name {name!r} is not lower-case"
                    trailers[name] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


async def call(
    client: httpx.AsyncClient,
    url: str,
    messages: Iterable[bytes] = (b"hello",),
    *,
    text: bool = False,
    headers: dict[str, str] | None = None,
    body: bytes | AsyncIterator[bytes] | None = None,
) -> WebResponse:
    """One gRPC-Web call; `body` replaces the framed `messages` (chunked, malformed...)."""
    sent_headers = {
        "content-type": content_type(text),
        "accept": content_type(text),
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-python-test/1",
        **(headers or {}),
    }
    content = body if body is not None else request_body(messages, text)
    response = await client.post(url, content=content, headers=sent_headers)
    raw = response.content
    if (response.headers.get("content-type") or "").startswith("application/grpc-web-text"):
        raw = decode_text(raw)
    framed, trailers = parse_frames(raw)
    return WebResponse(
        response.status_code, response.headers, framed, trailers, response.http_version
    )
