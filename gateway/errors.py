"""The gateway's errors. Each proxying error carries its wire answer.

An error raised on the data path knows the HTTP status the client gets and the Envoy
response flag that the access log and stats record, the way h2's errors carry
`error_code`. The router raises them; the HTTP
connection manager turns them into local replies in one place.
"""


class ConfigError(Exception):
    """The configuration is invalid. `errors` lists every problem, each naming its TOML path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class StartupError(Exception):
    """The gateway could not start (e.g. a listener's port is taken)."""


class GatewayError(Exception):
    """An error with a local reply: `status`, Envoy `response_flag`, and a short body."""

    status: int = 500
    response_flag: str = "-"
    body: str = "internal error"


class NoRouteFound(GatewayError):
    status = 404
    response_flag = "NR"
    body = "no route"


class NoHealthyUpstream(GatewayError):
    status = 503
    response_flag = "UH"
    body = "no healthy upstream"


class UpstreamOverflow(GatewayError):
    """No pooled connection became free within the cluster's pool_timeout."""

    status = 503
    response_flag = "UO"
    body = "upstream connection pool overflow"


class ClusterNotFound(GatewayError):
    """The route names a cluster that does not exist (any more: a reload removed it)."""

    status = 503
    response_flag = "NC"
    body = "cluster not found"


class UpgradeRejected(GatewayError):
    """An upgrade (WebSocket) on a route that does not allow it, when told to refuse."""

    status = 403
    response_flag = "-"
    body = "upgrade not allowed on this route"


class UpstreamConnectError(GatewayError):
    status = 502
    response_flag = "UF"
    body = (
        "upstream connect error or disconnect/reset before headers. "
        "reset reason: connection failure"
    )


class UpstreamReset(GatewayError):
    """The upstream closed, reset or broke protocol before the response was complete."""

    status = 502
    response_flag = "UC"
    body = (
        "upstream connect error or disconnect/reset before headers. "
        "reset reason: connection termination"
    )


class UpstreamRefusedStream(UpstreamReset):
    """The upstream refused the HTTP/2 stream (REFUSED_STREAM, or GOAWAY before it was
    processed): it never acted on the request, so any request may be retried."""


class UpstreamTimeout(GatewayError):
    status = 504
    response_flag = "UT"
    body = "upstream request timeout"


class StreamIdleTimeout(GatewayError):
    """No bytes moved either way on a stream for the listener's `stream_idle_timeout`."""

    status = 408
    response_flag = "SI"
    body = "stream timeout"


class StreamCancelled(GatewayError):
    """An operator cancelled the stream from the admin endpoint (`POST /tasks/ID/cancel`).
    Envoy has no flag for it; the HCM's `downstream_rq_admin_cancel` counts it."""

    status = 503
    body = "stream cancelled by the gateway operator"


class Overloaded(GatewayError):
    """A new request while `envoy.overload_actions.stop_accepting_requests` is active
    (`[overload]`). Envoy answers "envoy overloaded"; OM is its overload manager's flag."""

    status = 503
    response_flag = "OM"
    body = "gateway overloaded"


class DownstreamProtocolError(GatewayError):
    """The downstream request was malformed; the connection is closed after the reply."""

    response_flag = "DPE"

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        self.body = reason


class DownstreamDisconnect(Exception):
    """The downstream client went away (flag DC); the stream is abandoned."""
