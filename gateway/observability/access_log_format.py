"""Envoy's access log command operators: `%REQ(:METHOD)% %RESPONSE_CODE% %DURATION%`.

A format string is compiled once, at config load, into literal text and operator
functions; logging a request is then one call per part. An operator reads the request's
StreamInfo and returns a string, an int, or None for "not available" ("-" in text, null in
JSON). In a JSON format a value that is exactly one operator keeps its type, as in Envoy.

Operators: START_TIME[(strftime, with %3f/%6f/%9f for fractions)], REQ(X[?Y])[:LEN],
RESP(X[?Y])[:LEN], RESPONSE_CODE, RESPONSE_FLAGS, DURATION, RESPONSE_DURATION, BYTES_SENT,
BYTES_RECEIVED, PROTOCOL, UPSTREAM_HOST, UPSTREAM_CLUSTER, ROUTE_NAME,
DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, REQUESTED_SERVER_NAME
(TLS SNI), DOWNSTREAM_PEER_SUBJECT (mTLS client certificate subject), TRACE_ID, HOSTNAME.

Most values come from peers: headers, the path, the authority, the SNI, certificate
subjects, upstream response headers. In a text line each value is escaped (`escape`), so
no value can end the line or start a forged one, whatever a codec lets through; JSON
escapes on its own.
"""

import json
import re
import socket
import time
from collections.abc import Callable

from gateway.observability.stream_info import StreamInfo

Value = str | int | None
Operator = Callable[[StreamInfo], Value]
Part = str | Operator

_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%")
_FRACTION = re.compile(r"%([1-9])f")
#: Envoy's default START_TIME format.
DEFAULT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%3fZ"
#: What a value may not carry into a text line as it came: C0 and C1 controls and DEL
#: (line breaks, including the vertical tab, form feed, FS/GS/RS and NEL that
#: str.splitlines() and other Unicode-aware readers break on; terminal escapes), the
#: Unicode line and paragraph separators, and the double quote and backslash, so that a
#: value cannot close the quotes around it (Envoy's default format quotes several) and an
#: escape in the log always stands for one in the value. HTTP/2 lets all but NUL, CR and
#: LF through in field values and the path, HTTP/1.1 obs-text (NEL among it), TLS any
#: byte but NUL in a certificate subject.
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


def format_time(ts: float, fmt: str = DEFAULT_TIME_FORMAT) -> str:
    """strftime in UTC, plus %Nf: the first N digits of the fraction of a second."""
    fraction = f"{ts % 1:.9f}"[2:]
    fmt = _FRACTION.sub(lambda m: fraction[: int(m[1])], fmt)
    return time.strftime(fmt, time.gmtime(ts))


def escape(value: str) -> str:
    """`value` made safe for a text log line: each character in _UNSAFE as `\\xHH` (or
    `\\uHHHH`), as nginx escapes its access log; anything else as it is."""
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(_escaped, value)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"


def _pseudo(info: StreamInfo, name: str) -> Value:
    head = info.request_head
    if name == ":method":
        return head.method if head is not None else _dash(info.method)
    if name == ":path":
        return head.path if head is not None else _dash(info.path)
    if name == ":authority":
        return (head.authority or None) if head is not None else _dash(info.authority)
    if name == ":scheme":
        return head.scheme if head is not None else None
    return None


def _dash(value: str) -> str | None:
    return None if value == "-" else value


def _request_header(names: list[str]) -> Operator:
    def op(info: StreamInfo) -> Value:
        for name in names:
            if name.startswith(":"):
                value = _pseudo(info, name)
            else:
                head = info.request_head
                value = head.headers.get(name) if head is not None else None
            if value is not None:
                return value
        return None

    return op


def _response_header(names: list[str]) -> Operator:
    def op(info: StreamInfo) -> Value:
        head = info.response_head
        for name in names:
            if name == ":status":
                return info.response_code or None
            if head is not None and (value := head.headers.get(name)) is not None:
                return value
        return None

    return op


def _start_time(fmt: str | None) -> Operator:
    return lambda info: format_time(info.start_time, fmt or DEFAULT_TIME_FORMAT)


def _truncated(op: Operator, length: int) -> Operator:
    def cut(info: StreamInfo) -> Value:
        value = op(info)
        return value[:length] if isinstance(value, str) else value

    return cut


_HOSTNAME = socket.gethostname()
_PLAIN: dict[str, Operator] = {
    "RESPONSE_CODE": lambda i: i.response_code,
    "RESPONSE_FLAGS": lambda i: i.flags_text,
    "DURATION": lambda i: i.duration_ms(),
    "RESPONSE_DURATION": lambda i: i.upstream_service_time_ms,
    "BYTES_SENT": lambda i: i.bytes_sent,
    "BYTES_RECEIVED": lambda i: i.bytes_received,
    "PROTOCOL": lambda i: i.protocol,
    "UPSTREAM_HOST": lambda i: _dash(i.upstream_host),
    "UPSTREAM_CLUSTER": lambda i: _dash(i.cluster_name),
    "ROUTE_NAME": lambda i: _dash(i.route_name),
    "DOWNSTREAM_REMOTE_ADDRESS": lambda i: i.downstream_remote,
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda i: i.downstream_ip,
    "REQUESTED_SERVER_NAME": lambda i: _dash(i.requested_server_name),
    "DOWNSTREAM_PEER_SUBJECT": lambda i: _dash(i.downstream_peer_subject),
    "TRACE_ID": lambda i: _dash(i.trace_id),
    "HOSTNAME": lambda i: _HOSTNAME,
}
_WITH_ARGUMENT = {"REQ": _request_header, "RESP": _response_header}


def _operator(name: str, argument: str | None, length: str | None) -> Operator:
    if name == "START_TIME":
        op = _start_time(argument)
    elif name in _WITH_ARGUMENT:
        if not argument:
            raise ValueError(f"%{name}(...)% needs a header name")
        op = _WITH_ARGUMENT[name]([n.strip().lower() for n in argument.split("?")])
    elif name in _PLAIN and argument is None:
        op = _PLAIN[name]
    else:
        raise ValueError(f"unknown command operator %{name}{f'({argument})' if argument else ''}%")
    return _truncated(op, int(length)) if length else op


def compile_format(text: str) -> list[Part]:
    """Literal text and operators, in order; raises ValueError for an unknown operator."""
    parts: list[Part] = []
    pos = 0
    for m in _OPERATOR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(_operator(m[1], m[2], m[3]))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def render_text(parts: list[Part], info: StreamInfo) -> str:
    """A text line: the literal parts as configured, each value escaped."""
    return _join(parts, info, escape)


def _join(parts: list[Part], info: StreamInfo, convert: Callable[[str], str]) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            value = part(info)
            out.append("-" if value is None else convert(str(value)))
    return "".join(out)


def compile_json(fields: dict[str, str]) -> Callable[[StreamInfo], str]:
    """A JSON line renderer: each key's format compiled; a lone operator keeps its type."""
    compiled = {key: compile_format(value) for key, value in fields.items()}

    def render(info: StreamInfo) -> str:
        data: dict[str, Value] = {}
        for key, parts in compiled.items():
            if len(parts) == 1 and not isinstance(parts[0], str):
                data[key] = parts[0](info)
            else:
                data[key] = _join(parts, info, str)  # json.dumps escapes
        return json.dumps(data, separators=(",", ":")) + "\n"

    return render
