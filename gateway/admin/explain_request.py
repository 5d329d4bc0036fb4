"""The request /explain is asked about: read from the query string, checked, and turned
into what the listener and the connection manager would see of it.

`GET /explain?method=GET&url=https://api.example.com/v1/x&header=x-user:alice` names the
request the way a client would make it. The connection it arrives on follows from the URL
as a client would open it: TLS for https (and wss), SNI the URL's host when it is a name,
ALPN `h2, http/1.1` as curl offers; `sni=`, `alpn=` and `source=` say otherwise. Every
mistake is a ValueError whose text is one line, for the caller to show as it is.
"""

import ipaddress
import re
from urllib.parse import urlsplit

import attrs

from gateway.config.load import parse_address
from gateway.listeners.network_filter import ConnectionInfo
from gateway.protocol.headers import HeaderMap, RequestHead

#: The methods /explain takes: RFC 9110's and PATCH (the ones llhttp parses by default).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
#: What a client offers in its ClientHello unless `alpn=` says otherwise (curl's offer).
DEFAULT_ALPN = ("h2", "http/1.1")
PARAMETERS = ("method", "url", "header", "source", "sni", "alpn", "listener", "format")
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: URL schemes a client may use, and the HTTP scheme each stands for (WebSocket URLs are
#: an HTTP request with an Upgrade).
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DEFAULT_SOURCE = "127.0.0.1:0"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@attrs.frozen
class ExplainRequest:
    """A request and the connection it arrives on, as a client would make them."""

    method: str
    url: str
    #: "http" or "https": whether the client speaks TLS.
    scheme: str
    #: The URL's host (no port, no brackets) and port (the scheme's default if unset).
    host: str
    port: int
    #: The request target: path and query.
    target: str
    #: As given, in order (a `host` header among them stands in for the URL's authority).
    headers: tuple[tuple[str, str], ...]
    #: The Upgrade a `ws://` or `wss://` URL implies.
    upgrade: str | None
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    source_port: int
    #: Whether `source=` was given (else the loopback default stands in).
    source_given: bool
    #: SNI and ALPN of the ClientHello (none for cleartext).
    server_name: str | None
    application_protocols: tuple[str, ...]
    #: `listener=`: explain this listener, whatever the URL's port.
    listener: str | None

    @classmethod
    def from_query(cls, pairs: list[tuple[str, str]]) -> "ExplainRequest":
        """The request a query string describes; ValueError (one line) if it is wrong."""
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            if key not in PARAMETERS:
                raise ValueError(f"unknown parameter {key!r}; use {', '.join(PARAMETERS)}")
            values.setdefault(key, []).append(value)
        for key, found in values.items():
            if key != "header" and len(found) > 1:
                raise ValueError(f"{key}= is given {len(found)} times; give it once")
        one = {key: found[0] for key, found in values.items()}
        if not one.get("url"):
            raise ValueError("url= is required, e.g. url=https://api.example.com/v1/x")
        method = one.get("method", "GET").upper()
        if method not in METHODS:
            raise ValueError(f"unknown method {one['method']!r}; use one of {', '.join(METHODS)}")
        url = one["url"]
        scheme, host, port, target = _split_url(url)
        headers = tuple(_header(h) for h in values.get("header", ()))
        source_text = one.get("source") or _DEFAULT_SOURCE
        try:
            source = parse_address(source_text)
            source_ip = ipaddress.ip_address(source.host)
        except ValueError:
            raise ValueError(f"source= must be IP:PORT, got {source_text!r}") from None
        tls = _SCHEMES[scheme] == "https"
        sni = one.get("sni", host if tls and not _is_ip(host) else None) or None
        # A WebSocket client offers HTTP/1.1 only: its Upgrade is an HTTP/1.1 mechanism.
        alpn: tuple[str, ...] = (("http/1.1",) if scheme == "wss" else DEFAULT_ALPN) if tls else ()
        if "alpn" in one:
            alpn = tuple(p.strip() for p in one["alpn"].split(",") if p.strip())
        if not tls and ("sni" in one or "alpn" in one):
            raise ValueError(f"sni= and alpn= are TLS: use an https:// URL, not {scheme}://")
        return cls(
            method=method,
            url=url,
            scheme=_SCHEMES[scheme],
            host=host,
            port=port,
            target=target if method != "CONNECT" else _authority(host, port),
            headers=headers,
            upgrade="websocket" if scheme in ("ws", "wss") else None,
            source=source_ip,
            source_port=source.port,
            source_given="source" in one,
            server_name=sni,
            application_protocols=alpn,
            listener=one.get("listener") or None,
        )

    @property
    def peer(self) -> str:
        ip = str(self.source)
        return f"[{ip}]:{self.source_port}" if ":" in ip else f"{ip}:{self.source_port}"

    def connection_info(self, destination_port: int, inspected: bool) -> ConnectionInfo:
        """The connection as the listener knows it before choosing a filter chain; what the
        TLS inspector reads (transport, SNI, ALPN) only if the listener runs it."""
        info = ConnectionInfo(
            peer=self.peer,
            source_ip=self.source,
            destination_port=destination_port,
            source_port=self.source_port,
        )
        if inspected:
            info.transport_protocol = "tls" if self.scheme == "https" else "raw_buffer"
            info.server_name = self.server_name
            info.application_protocols = self.application_protocols
        return info

    def head(self, scheme: str, http_version: str) -> RequestHead:
        """The request head as the codec would hand it over: `scheme` is the connection's
        own (https once TLS is terminated), the authority the Host header's (or the
        URL's), an HTTP/1.1 Upgrade carried as the codecs carry it."""
        headers = HeaderMap(self.headers)
        authority = headers.get("host") or _authority(self.host, self.port, self.scheme)
        if http_version == "2":
            headers.remove("host")  # :authority carries it
        elif "host" not in headers:
            headers = HeaderMap([("host", authority), *self.headers])
        upgrade = self.upgrade
        if upgrade is None and http_version != "2" and headers.get("upgrade"):
            tokens = (t.strip().lower() for t in (headers.get("connection") or "").split(","))
            upgrade = (headers.get("upgrade") or "").lower() if "upgrade" in tokens else None
        if upgrade is not None and http_version != "2":
            headers.set("connection", "upgrade")
            headers.set("upgrade", upgrade)
        method = "CONNECT" if upgrade is not None and http_version == "2" else self.method
        return RequestHead(method, self.target, authority, scheme, headers, http_version, upgrade)


def _split_url(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and target of an absolute URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad url {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"bad url {url!r}: the scheme must be http, https, ws or wss")
    host = parts.hostname
    if not host:
        raise ValueError(f"bad url {url!r}: it has no host")
    if any(c.isspace() for c in url):
        raise ValueError(f"bad url {url!r}: it holds whitespace")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or _DEFAULT_PORTS[_SCHEMES[scheme]], target


def _authority(host: str, port: int, scheme: str | None = None) -> str:
    """host[:port] as a client writes it in Host: no port when it is the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    if scheme is not None and _DEFAULT_PORTS[scheme] == port:
        return name
    return f"{name}:{port}"


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.fullmatch(name):
        raise ValueError(f"header= must be NAME:VALUE, got {text!r}")
    value = value.strip()
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"header {name!r}: its value holds a line break or NUL")
    return name.lower(), value
