"""Header field lists as HTTP/2 and HTTP/3 carry them: pseudo-header fields first
(`:method`, `:path`, `:status`...), then lowercase names. Both codecs turn them into the
gateway's heads, and heads back into them, here, so the two protocols cannot drift apart
(RFC 9113 8.3 and RFC 9114 4.3 define the same mapping)."""

import re
from collections.abc import Iterable

from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: Fields HTTP/2 and HTTP/3 forbid (RFC 9113 8.2.2, RFC 9114 4.2), and Host, which they
#: carry as :authority.
_NOT_SENT = frozenset(
    {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-z]+"
#: Fields as both may carry them: a lowercase token name, and a value without CR, LF or
#: NUL (the peer would refuse them). One match checks a whole header list.
_FIELDS_RE = re.compile(rf"(?:{_TOKEN}:[^\r\n\x00]*\n)*", re.ASCII)


def request_head(headers: list[tuple[bytes, bytes]], scheme: str, http_version: str) -> RequestHead:
    """A request head from a received field list (validated by the protocol library)."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)  # HTTP/2 and HTTP/3 may split cookies; HTTP/1.1 wants one
        else:
            regular.append((name, value))
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    head_headers = HeaderMap.from_raw(regular)
    authority = (pseudo.get(b":authority") or b"").decode("latin-1") or (
        head_headers.get("host") or ""
    )
    return RequestHead(
        method=pseudo.get(b":method", b"GET").decode("ascii"),
        path=pseudo.get(b":path", b"/").decode("latin-1"),
        authority=authority,
        # The connection's own scheme, never the client's word for it: x-forwarded-proto
        # and redirects are built from it.
        scheme=scheme,
        headers=head_headers,
        http_version=http_version,
        upgrade=(pseudo.get(b":protocol") or b"").decode("ascii").lower() or None,
    )


def response_head(headers: list[tuple[bytes, bytes]]) -> ResponseHead:
    status = 200
    regular = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            regular.append((name, value))
    return ResponseHead(status, HeaderMap.from_raw(regular))


def wire(
    pseudo: list[tuple[bytes, bytes]], headers: Iterable[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    """The field list to send: what HTTP/2 and HTTP/3 forbid dropped, values trimmed, the
    rest checked in one match. The libraries' own outbound validation is off (h2's ran ten
    generator passes per header, ~15 us per request): the fields were checked where they
    came in, and this covers what a filter or the configuration may have set since.
    ValueError for a field the protocol cannot carry, as the HTTP/1.1 codec raises."""
    fields = [
        (n, v.strip(" \t"))
        for n, v in headers
        if n not in _NOT_SENT and (n != "te" or v.strip().lower() == "trailers")
    ]
    text = "".join([f"{n}:{v}\n" for n, v in fields])
    if _FIELDS_RE.fullmatch(text) is None or text.count("\n") != len(fields):
        raise ValueError(f"a header cannot be sent over HTTP/2 or HTTP/3: {fields!r}")
    # Values were decoded as latin-1 on the way in; encode them the same way on the way out.
    return pseudo + [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
