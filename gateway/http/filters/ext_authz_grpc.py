"""ext_authz's gRPC mode: the CheckRequest Envoy sends to envoy.service.auth.v3.Authorization
and what the CheckResponse asks for, as a Verdict.

The request carries the attributes Envoy fills (AttributeContext): the client's and the
gateway's addresses (and the client certificate's subject, over mTLS), the request's time,
and the HTTP request: id (x-request-id), method, path with query, host, scheme,
protocol, and headers: every one (values of a repeated name joined with commas) with the
pseudo-headers :authority, :method, :path and :scheme, or only the pseudo-headers and
`allowed_headers`. The body is not sent (Envoy's `with_request_body` is not supported), so
`size`, the body bytes received before the check, is 0 as it is in Envoy without it.
"""

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import timestamp_pb2

from gateway.http.filters.authz_verdict import (
    EditAction,
    HeaderEdit,
    Verdict,
    apply_edits,
    checked_removals,
)
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, RequestHead

METHOD = "/envoy.service.auth.v3.Authorization/Check"

_Context = attribute_context_pb2.AttributeContext
_Option = base_pb2.HeaderValueOption

_ACTIONS: dict[int, EditAction] = {
    _Option.APPEND_IF_EXISTS_OR_ADD: "add",
    _Option.ADD_IF_ABSENT: "add_if_absent",
    _Option.OVERWRITE_IF_EXISTS_OR_ADD: "set",
    _Option.OVERWRITE_IF_EXISTS: "set_if_exists",
}


def _peer(address: str, principal: str = "") -> "attribute_context_pb2.AttributeContext.Peer":
    """A Peer from "ip:port" ("[v6]:port"); no address if unknown ("-")."""
    peer = _Context.Peer(principal=principal)
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        peer.address.socket_address.address = host.strip("[]")
        peer.address.socket_address.port_value = int(port)
    return peer


def check_request(
    request: RequestHead,
    info: StreamInfo,
    allowed_headers: list[str] | None,
    context_extensions: dict[str, str],
) -> "external_auth_pb2.CheckRequest":
    headers: dict[str, str] = {
        ":authority": request.authority,
        ":method": request.method,
        ":path": request.path,
        ":scheme": request.scheme,
    }
    for name, value in request.headers:
        if allowed_headers is None or name in allowed_headers:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    http = _Context.HttpRequest(
        id=info.request_id,
        method=request.method,
        headers=headers,
        path=request.path,
        host=request.authority,
        scheme=request.scheme,
        protocol=info.protocol,
    )
    time = timestamp_pb2.Timestamp()
    time.FromNanoseconds(int(info.start_time * 1e9))
    subject = info.downstream_peer_subject
    attributes = _Context(
        source=_peer(info.downstream_remote, subject if subject != "-" else ""),
        destination=_peer(info.downstream_local),
        request=_Context.Request(time=time, http=http),
        context_extensions=context_extensions,
    )
    if info.requested_server_name != "-":
        attributes.tls_session.sni = info.requested_server_name
    return external_auth_pb2.CheckRequest(attributes=attributes)


def _edits(options: list["base_pb2.HeaderValueOption"]) -> tuple[HeaderEdit, ...]:
    """HeaderValueOptions as edits: `append` when set (true: append, false: set), else
    `append_action`."""
    edits = []
    for option in options:
        if option.HasField("append"):
            action: EditAction = "append" if option.append.value else "set"
        else:
            action = _ACTIONS.get(option.append_action, "add")
        edits.append(HeaderEdit.checked(option.header.key, option.header.value, action))
    return tuple(edits)


def verdict(response: "external_auth_pb2.CheckResponse") -> Verdict:
    """The Verdict a CheckResponse gives: OK allows, any other status denies (403 unless
    the denied_response names a status). UnusableAnswer for edits the gateway cannot
    make."""
    if response.status.code == 0:
        ok = response.ok_response
        return Verdict(
            allowed=True,
            request_edits=_edits(ok.headers),
            request_removals=checked_removals(list(ok.headers_to_remove)),
            response_edits=_edits(ok.response_headers_to_add),
        )
    denied = response.denied_response
    # The local reply a denial becomes takes no 1xx (nor an unset 0): Envoy's 403 instead;
    # and no body where the status may not have one.
    status = denied.status.code if 200 <= denied.status.code <= 599 else 403
    denial = HeaderMap()
    apply_edits(denial, _edits(denied.headers))
    return Verdict(
        allowed=False,
        status=status,
        body=denied.body if status not in (204, 304) else "",
        denial_headers=denial,
    )
