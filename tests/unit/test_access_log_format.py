"""Envoy command operators (gateway/observability/access_log_format.py) against a
hand-filled StreamInfo."""

import json

import pytest

from gateway.observability.access_log_format import (
    compile_format,
    compile_json,
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
