"""What an authorization service answered, whichever way it was asked (ext_authz over HTTP
or gRPC): allow, with header edits for the request and its response, or deny, with the
response the client gets.

Header edits follow Envoy's HeaderValueOption: each names how it meets headers already
there (`append_action`, or the older `append`). A service's answer is input from outside
at run time, so an edit of a header the gateway must own (framing, connection, Host, a
pseudo-header) or one that cannot be sent makes the whole answer unusable: the check then
failed, and `failure_mode_allow` decides, as for a service that did not answer. The
ratelimit filter holds its service's headers to the same rule (`service_may_set`).
"""

from typing import Literal

import attrs

from gateway.config.model import is_sendable_field
from gateway.protocol.headers import NOT_TRAILERS, HeaderMap

#: How an edit meets a header already there: "add" another line (Envoy's
#: APPEND_IF_EXISTS_OR_ADD), "add_if_absent", "set" (OVERWRITE_IF_EXISTS_OR_ADD),
#: "set_if_exists" (OVERWRITE_IF_EXISTS), or "append" to the value there with a comma, or
#: add it (the deprecated `append = true`).
EditAction = Literal["add", "add_if_absent", "set", "set_if_exists", "append"]


class UnusableAnswer(ValueError):
    """The service asked for a header edit the gateway cannot make."""


def service_may_set(name: str, value: str) -> bool:
    """Whether a service may have the gateway set this header (lower-case `name`): one
    either protocol can send, and none of the framing, connection or Host fields the
    gateway owns (a pseudo-header is no token, so it fails too)."""
    return is_sendable_field(name, value) and name not in NOT_TRAILERS


@attrs.frozen
class HeaderEdit:
    name: str
    value: str
    action: EditAction = "set"

    @classmethod
    def checked(cls, name: str, value: str, action: EditAction) -> "HeaderEdit":
        """An edit from a service's answer: UnusableAnswer if the gateway must not make it."""
        name = name.lower()
        if not service_may_set(name, value):
            raise UnusableAnswer(f"the service asked to set {name!r}, which it cannot")
        return cls(name, value, action)


def apply_edits(headers: HeaderMap, edits: tuple[HeaderEdit, ...]) -> None:
    for edit in edits:
        present = edit.name in headers
        if edit.action == "add" or (edit.action == "add_if_absent" and not present):
            headers.add(edit.name, edit.value)
        elif edit.action == "set" or (edit.action == "set_if_exists" and present):
            headers.set(edit.name, edit.value)
        elif edit.action == "append":
            values = headers.get_all(edit.name)
            headers.set(edit.name, ",".join([*values, edit.value]))


def checked_removals(names: list[str]) -> tuple[str, ...]:
    names = [name.lower() for name in names]
    for name in names:
        if not service_may_set(name, ""):
            raise UnusableAnswer(f"the service asked to remove {name!r}, which it cannot")
    return tuple(names)


@attrs.frozen
class Verdict:
    allowed: bool
    #: Allowed: edits of the request going upstream, then headers removed from it.
    request_edits: tuple[HeaderEdit, ...] = ()
    request_removals: tuple[str, ...] = ()
    #: Allowed: edits of the upstream's response on its way to the client.
    response_edits: tuple[HeaderEdit, ...] = ()
    #: Denied: the client's response, whose headers replace the gateway's own of the
    #: same names (a service's content-type wins over the local reply's text/plain).
    status: int = 403
    body: str = ""
    denial_headers: HeaderMap = attrs.Factory(HeaderMap)
