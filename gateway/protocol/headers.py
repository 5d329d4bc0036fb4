"""Request and response heads, the header map, the proxy's header rules, and the local
reply (a response the gateway makes itself: a filter's, the router's, the HCM's).

Heads are codec-neutral: the HTTP/1.1 codec builds them from llhttp's callbacks, and
filters and the router only ever see these objects. Header names are lower-case `str`;
values are `str` decoded as latin-1 so that any byte a peer sent survives the round trip
unchanged.
"""

import email.utils
import time
from collections.abc import Collection, Iterable, Iterator, Mapping

import attrs

#: Connection-specific headers (RFC 9110 7.6.1) that a proxy must not forward. (`Trailer`
#: is not one: it announces the trailer fields to the recipient, end to end.)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    }
)
#: What a trailer section may not carry (RFC 9110 6.5.1: a field a recipient needs before
#: the content cannot be a trailer): the framing, the target host, the list of trailers
#: itself, and the connection's own fields (RFC 9113 8.2.2 refuses those in any HTTP/2
#: field block). Clients such as h11 and curl take them as trailers, but a recipient that
#: merged them into the header section would reframe or reroute a message already on its
#: way. Pseudo-header fields are never trailers either (RFC 9113 8.1).
NOT_TRAILERS = HOP_BY_HOP | {"content-length", "host", "trailer"}


class HeaderMap:
    """An ordered multi-map of lower-case header names to values, like Envoy's HeaderMap."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(n.lower(), v) for n, v in items]

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> "HeaderMap":
        """Builds a map from a codec's already-lower-cased byte pairs."""
        headers = cls.__new__(cls)
        headers._items = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        name = name.lower()
        for n, v in self._items:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self._items if n == name]

    def add(self, name: str, value: str) -> None:
        """Appends a value, keeping any existing ones."""
        self._items.append((name.lower(), value))

    def set(self, name: str, value: str) -> None:
        """Replaces every value of `name` with one value."""
        name = name.lower()
        self.remove_names((name,))
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        self.remove_names((name.lower(),))

    def remove_names(self, names: Collection[str]) -> None:
        """Removes every header whose (lower-case) name is in `names`."""
        # A plain loop: a head has a handful of headers, and most calls remove nothing.
        for n, _ in self._items:
            if n in names:
                self._items = [item for item in self._items if item[0] not in names]
                return

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HeaderMap({self._items!r})"

    def apply(self, add: Mapping[str, str], remove: Iterable[str]) -> None:
        """Applies a configured mutation: removals first, then `add` (each replaces)."""
        for name in remove:
            self.remove(name)
        for name, value in add.items():
            self.set(name, value)


@attrs.define
class RequestHead:
    """A request's method, target and headers (Envoy's RequestHeaderMap with pseudo-headers)."""

    method: str
    path: str
    authority: str
    scheme: str
    headers: HeaderMap
    #: "1.0", "1.1", "2" or "3".
    http_version: str = "1.1"
    #: The protocol the client asks to switch to ("websocket"): HTTP/1.1 `Upgrade` with
    #: `Connection: upgrade`, or HTTP/2 extended CONNECT's `:protocol` (RFC 8441).
    upgrade: str | None = None

    @property
    def multiplexed(self) -> bool:
        """HTTP/2 or HTTP/3: streams, trailers as frames, upgrades as extended CONNECT
        (RFC 8441, RFC 9220) rather than `Upgrade:` and 101."""
        return self.http_version in ("2", "3")

    @property
    def path_only(self) -> str:
        """The path without its query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.path.partition("?")[2]


@attrs.define
class ResponseHead:
    status: int
    headers: HeaderMap
    reason: str = ""


@attrs.frozen
class LocalReply:
    """A response the gateway makes itself instead of asking an upstream."""

    status: int
    body: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: Envoy response flag recorded in the access log and stats ("-" when none).
    response_flag: str = "-"
    #: For gRPC requests: the grpc-status to answer with (default: mapped from `status`).
    grpc_status: int | None = None


def strip_hop_by_hop(headers: HeaderMap) -> None:
    """Removes connection-specific headers, including any that `Connection` names.

    `te: trailers` survives (as Envoy keeps it): gRPC needs it end to end, and it is the
    one TE value HTTP/2 allows.
    """
    named: set[str] = set()
    wants_trailers = found = False
    for name, value in headers:  # one pass: most heads carry none, or only `connection`
        if name in HOP_BY_HOP:
            found = True
            if name == "connection":
                named.update(t.strip().lower() for t in value.split(",") if t.strip())
            elif name == "te" and "trailers" in value.lower():
                wants_trailers = True
    if not found:
        return  # (a header named by `Connection` implies a `Connection` header)
    headers.remove_names(HOP_BY_HOP | named if named else HOP_BY_HOP)
    if wants_trailers:
        headers.add("te", "trailers")


def strip_trailer_fields(trailers: HeaderMap) -> None:
    """Removes what may not be a trailer (NOT_TRAILERS, pseudo-header fields, and any field
    a `Connection` trailer names), whichever peer sent the section and over whichever
    protocol; the other trailers (gRPC's status, checksums) pass as they came."""
    drop = set()
    for name, value in trailers:
        if name in NOT_TRAILERS or name.startswith(":"):
            drop.add(name)
            if name == "connection":
                drop.update(t.strip().lower() for t in value.split(","))
    if drop:
        trailers.remove_names(drop)


_date = (0, "")


def http_date() -> str:
    """Now as an IMF-fixdate (RFC 9110 5.6.7), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]
