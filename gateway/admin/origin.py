"""The admin endpoint answers its own pages and the tools of this host, never another web
site a browser has open.

The admin endpoint has no authentication, and the browser of an operator can reach it:
- a page on another site can send it a "simple" POST (no CORS preflight), enough for
  `/quitquitquit`, and can open `ws://127.0.0.1:9901/tasks/ws` (WebSockets are not bound
  by the same-origin policy) to read every request URL;
- a page whose own DNS name was made to resolve to 127.0.0.1 (DNS rebinding) reads any
  admin answer as same-origin: only its `Host` header gives it away.

So a request whose `Host` is a DNS name (other than `localhost` or the admin's own) is
refused, and so is a WebSocket handshake or a request that may change state (any method but
GET and HEAD) that a browser marks as coming from elsewhere: an `Origin` other than
`http://HOST` itself, or `Sec-Fetch-Site` other than `same-origin` or `none`. Non-browser
clients (curl, `gateway tasks`, the supervisor asking its workers) send neither header.
Plain reads need no Origin check: a browser does not let a foreign page see the answer.
"""

import ipaddress
import logging

from gateway.admin.asgi import App, Receive, Scope, Send
from gateway.admin.views import Reply
from gateway.observability.access_log_format import escape
from gateway.observability.stats import Counter

log = logging.getLogger("gateway.admin")

_READS = ("GET", "HEAD")
_SAME_SITE = ("same-origin", "none")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _host_name(host: str) -> str:
    """The name or address part of a Host header (`[::1]:9901` -> `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def refusal(scope: Scope, own_host: str) -> str | None:
    """Why the admin endpoint must not serve this HTTP request or WebSocket handshake, or
    None; `own_host` is the host of `[admin] address`."""
    host = _header(scope, b"host")
    if host is not None:
        name = _host_name(host).lower()
        if name not in ("localhost", own_host.lower()) and not _is_ip_literal(name):
            return (
                f"Host {host!r} is not this admin endpoint's address: use {own_host}, "
                "localhost or an IP address (a DNS name may be another site's, rebound to "
                "this host)"
            )
    if scope["type"] == "http" and scope["method"] in _READS:
        return None
    origin = _header(scope, b"origin")
    if origin is not None and (host is None or origin.lower() != f"http://{host}".lower()):
        return f"cross-origin request refused (Origin: {origin})"
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site.lower() not in _SAME_SITE:
        return f"cross-origin request refused (Sec-Fetch-Site: {site})"
    return None


class SameOriginOnly:
    """ASGI middleware: what `refusal` refuses gets `403` with the reason (a WebSocket
    handshake too, as an HTTP answer), counted in `refused`."""

    def __init__(self, app: App, own_host: str, refused: Counter) -> None:
        self._app = app
        self._own_host = own_host
        self._refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            reason = refusal(scope, self._own_host)
            if reason is not None:
                self._refused.inc()
                # The path (percent-decoded) and the reason (a header) are a web page's to
                # choose: escaped, they cannot forge a line of the gateway's log.
                log.warning(
                    "admin: %s %s: %s",
                    scope.get("method", "WEBSOCKET"),
                    escape(scope["path"]),
                    escape(reason),
                )
                reply = Reply.text(f"admin: {reason}\n", 403)
                await reply.send(send, websocket=scope["type"] == "websocket")
                return
        await self._app(scope, receive, send)
