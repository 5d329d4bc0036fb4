"""Envoy command operators (gateway/observability/access_log_format.py) against a
hand-filled StreamInfo."""

import json

import pytest

from gateway.observability.access_log import format_envoy
from gateway.observability.access_log_format import (
    compile_format,
    compile_json,
    escape,
    format_time,
    render_text,
)
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead


def info() -> StreamInfo:
    i = StreamInfo(stream_id=1, downstream_remote="[::1]:5000", start_time=1795608000.123456)
    i.request_head = RequestHead(
        method="GET",
        path="/new",
        authority="api",
        scheme="http",
        headers=HeaderMap([("x-envoy-original-path", "/old"), ("user-agent", "curl/8")]),
    )
    i.response_head = ResponseHead(200, HeaderMap([("content-type", "text/plain")]))
    i.response_code = 200
    i.bytes_sent = 12
    return i


def test_text_operators():
    parts = compile_format(
        "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %REQ(USER-AGENT):4% "
        "%RESP(CONTENT-TYPE)% %RESP(:STATUS)% %BYTES_SENT% %UPSTREAM_HOST% %RESPONSE_DURATION% "
        "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(X-MISSING)% 100%"
    )
    assert render_text(parts, info()) == ("GET /old /new curl text/plain 200 12 - - ::1 - 100%")


def test_start_time_formats():
    assert format_time(1795608000.123456) == "2026-11-25T12:00:00.123Z"
    assert format_time(1795608000.123456, "%H:%M:%S.%6f") == "12:00:00.123456"
    parts = compile_format("%START_TIME(%Y/%m/%d)%")
    assert render_text(parts, info()) == "2026/11/25"


def test_json_keeps_types_of_lone_operators():
    render = compile_json(
        {"code": "%RESPONSE_CODE%", "host": "%UPSTREAM_HOST%", "line": "%REQ(:METHOD)% x"}
    )
    assert json.loads(render(info())) == {"code": 200, "host": None, "line": "GET x"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("%NOPE%", "unknown command operator %NOPE%"),
        ("%REQ()%", r"%REQ\(...\)% needs a header name"),
        ("%DURATION(x)%", r"unknown command operator %DURATION\(x\)%"),
    ],
)
def test_unknown_operators(text, error):
    with pytest.raises(ValueError, match=error):
        compile_format(text)


#: Every kind of character a peer can put in a value that must not reach a text line as
#: it came: LF, CR, ESC, VT, FF, FS, GS, RS, DEL, NEL, LINE SEPARATOR, a quote, a
#: backslash; then one that may (a latin-1 letter).
HOSTILE = 'a\nb\r\x1b[2J\x0b\x0c\x1c\x1d\x1e\x7f\x85\u2028"\\\xe9'
ESCAPED = r"a\x0Ab\x0D\x1B[2J\x0B\x0C\x1C\x1D\x1E\x7F\x85\u2028\x22\x5C" + "\xe9"


def hostile_info() -> StreamInfo:
    i = info()
    assert i.request_head is not None and i.response_head is not None
    i.request_head.path = "/p" + HOSTILE
    i.request_head.authority = HOSTILE
    i.request_head.headers.add("x-note", HOSTILE)
    i.response_head.headers.add("x-up", HOSTILE)
    i.requested_server_name = HOSTILE
    i.downstream_peer_subject = "CN=" + HOSTILE
    i.method, i.path, i.authority = "GET", "/p" + HOSTILE, HOSTILE
    i.user_agent = i.forwarded_for = i.request_id = HOSTILE
    return i


def test_escape():
    assert escape(HOSTILE) == ESCAPED
    assert escape("/plain?q=1&x=%0A") == "/plain?q=1&x=%0A"  # nothing to escape: the same str
    assert escape("\u2029\x00") == r"\u2029\x00"


def test_every_value_in_a_text_line_is_escaped():
    parts = compile_format(
        '%REQ(:PATH)% "%REQ(X-NOTE)%" "%RESP(X-UP)%" %REQUESTED_SERVER_NAME% '
        '"%DOWNSTREAM_PEER_SUBJECT%" %REQ(X-NOTE):2% %REQ(:AUTHORITY)%'
    )
    line = render_text(parts, hostile_info())
    assert line == (
        f'/p{ESCAPED} "{ESCAPED}" "{ESCAPED}" {ESCAPED} "CN={ESCAPED}" a\\x0A {ESCAPED}'
    )
    assert len(line.splitlines()) == 1


def test_envoy_default_format_escapes_what_peers_sent():
    line = format_envoy(hostile_info())
    assert line.endswith("\n") and len(line.splitlines()) == 1
    assert f'"GET /p{ESCAPED} HTTP/1.1"' in line
    assert line.count(ESCAPED) == 5  # path, x-forwarded-for, user-agent, request id, authority


def test_json_values_stay_as_they_came():
    render = compile_json(
        {
            "note": "%REQ(X-NOTE)%",
            "line": "%REQ(:METHOD)% %REQ(:PATH)%",
            "sni": "%REQUESTED_SERVER_NAME%",
        }
    )
    line = render(hostile_info())
    assert line.endswith("\n") and len(line.splitlines()) == 1
    assert json.loads(line) == {"note": HOSTILE, "line": f"GET /p{HOSTILE}", "sni": HOSTILE}
