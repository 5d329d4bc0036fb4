"""gRPC over HTTP/2 as a proxy sees it: detection, deadlines, and errors as gRPC statuses.

The gateway never parses the gRPC messages it proxies: bodies stream through frame by
frame and trailers pass untouched. Its own gRPC calls (health checks, ADS) use the
length-prefixed framing below, and the grpc_stats filter counts messages by their prefixes
alone (`FrameCounter`). What it must understand is the envelope: `grpc-timeout` (the client's
deadline, which bounds the upstream exchange and is forwarded reduced by the time already
spent) and how to say "unavailable" or "deadline exceeded" in a way a gRPC client reads:
HTTP 200 with a trailers-only response carrying `grpc-status` and `grpc-message`.
"""

import enum
import re
import struct
from urllib.parse import quote

from gateway.protocol.headers import HeaderMap, RequestHead


class Status(enum.IntEnum):
    """The gRPC status codes the gateway produces (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


#: The status a gateway-made HTTP error becomes, as Envoy maps them (timeouts: 504).
_FROM_HTTP = {
    400: Status.INTERNAL,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.UNIMPLEMENTED,
    429: Status.UNAVAILABLE,
    431: Status.INTERNAL,
    500: Status.INTERNAL,
    502: Status.UNAVAILABLE,
    503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}

#: A gRPC status's HTTP status, as Envoy maps them (Grpc::Utility::grpcToHttpStatus, after
#: google/rpc/code.proto): for answers that leave as plain HTTP (JSON transcoding).
_TO_HTTP = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}

_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def is_grpc_request(request: RequestHead) -> bool:
    content_type = request.headers.get("content-type") or ""
    # gRPC-Web rides on HTTP/1.1 semantics and reads errors differently: not ours to answer.
    return content_type.startswith("application/grpc") and not content_type.startswith(
        "application/grpc-web"
    )


def status_for_http(status: int) -> Status:
    if status == 200:
        return Status.OK
    return _FROM_HTTP.get(status, Status.UNKNOWN)


def http_status_for(status: int) -> int:
    """The HTTP status of a gRPC status; 500 for codes gRPC does not define."""
    return _TO_HTTP.get(status, 500)


def trailers_only(http_status: int, message: str, status: int | None = None) -> HeaderMap:
    """The headers of a trailers-only gRPC response for a gateway-made error."""
    code = status if status is not None else int(status_for_http(http_status))
    return HeaderMap(
        [
            ("content-type", "application/grpc"),
            ("grpc-status", str(code)),
            # grpc-message is percent-encoded (gRPC over HTTP/2 spec).
            ("grpc-message", quote(message, safe=" !#$&'()*+,/:;=?@[]~")),
        ]
    )


def parse_timeout(value: str | None) -> float | None:
    """`grpc-timeout` ("100m", "5S", "1H") in seconds; None if absent or malformed."""
    if value is None or not (m := _TIMEOUT.match(value.strip())):
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_timeout(seconds: float) -> str:
    """Seconds as the most precise `grpc-timeout` that fits the 8-digit limit."""
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        value = int(max(seconds, 0) / scale)
        if value < 100_000_000:
            return f"{value}{unit}"
    return f"{min(int(seconds / 3600), 99_999_999)}H"


#: A message's prefix, a compressed flag and the length (gRPC's Length-Prefixed-Message).
_PREFIX = struct.Struct(">BI")


def call_head(method: str, authority: str) -> RequestHead:
    """The request head of a gRPC call the gateway makes itself."""
    headers = HeaderMap([("content-type", "application/grpc"), ("te", "trailers")])
    return RequestHead("POST", method, authority, "http", headers)


def frame(message: bytes) -> bytes:
    """One uncompressed message, length-prefixed."""
    return _PREFIX.pack(0, len(message)) + message


def split_messages(buffer: bytes, max_size: int) -> tuple[list[bytes], bytes]:
    """The whole messages at the start of `buffer`, and the bytes of the next, partial
    one. ValueError for a compressed message (never asked for) or one over `max_size`."""
    messages = []
    while len(buffer) >= _PREFIX.size:
        compressed, size = _PREFIX.unpack_from(buffer)
        if compressed or size > max_size:
            raise ValueError("compressed or oversized gRPC message")
        end = _PREFIX.size + size
        if len(buffer) < end:
            break
        messages.append(buffer[_PREFIX.size : end])
        buffer = buffer[end:]
    return messages, buffer


def service_and_method(path: str) -> tuple[str, str] | None:
    """The service and method a call's `/SERVICE/METHOD` path names (Envoy's
    resolveServiceAndMethod); None for a path of any other shape."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class FrameCounter:
    """Counts the messages of one direction of a call as its body streams by, chunk by
    chunk (Envoy's Grpc::FrameInspector). Only the 5-byte prefixes are read and the
    messages' own bytes are skipped over, so a chunk costs one step per message that begins
    in it, and the state between chunks is at most 4 bytes of a prefix split across them
    plus the count of message bytes still to skip. Compressed messages count like others;
    nothing is validated, as the upstream and the client judge the messages themselves."""

    __slots__ = ("_prefix", "_skip", "count")

    def __init__(self) -> None:
        #: Messages whose prefix was seen whole.
        self.count = 0
        self._prefix = b""
        self._skip = 0

    def inspect(self, data: bytes) -> int:
        """Reads the next chunk; returns how many messages' prefixes completed in it."""
        end = len(data)
        pos = self._skip
        found = 0
        if self._prefix:  # the rest of a prefix the last chunk cut (nothing to skip then)
            take = data[: _PREFIX.size - len(self._prefix)]
            self._prefix += take
            if len(self._prefix) < _PREFIX.size:
                return 0
            pos = len(take) + _PREFIX.unpack(self._prefix)[1]
            self._prefix = b""
            found = 1
        unpack, size = _PREFIX.unpack_from, _PREFIX.size
        while pos + size <= end:
            pos += size + unpack(data, pos)[1]
            found += 1
        if pos < end:  # the chunk ends inside a prefix
            self._prefix = data[pos:]
            pos = end
        self._skip = pos - end
        self.count += found
        return found
