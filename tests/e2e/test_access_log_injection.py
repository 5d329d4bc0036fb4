"""No peer can forge an access log line: a TLS server name with a line break, request
headers and paths with control characters (HTTP/2 lets all but NUL, CR and LF through),
obs-text over HTTP/1.1, an upstream's response header. One request is one line in every
text format, quoted fields stay closed, and JSON keeps each value exactly as it came."""

import json
import re
import ssl

import h2.events
import trio

from tests.config_builder import ConfigBuilder, route
from tests.helpers import RawH2Client, eventually, run_gateway, start_scripted_upstream
from tests.tls_helpers import Pki, tls_exchange

TEXT_FORMAT = (
    '%REQUESTED_SERVER_NAME% %REQ(:METHOD)% "%REQ(:PATH)%" "%REQ(:AUTHORITY)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-NOTE)%" "%RESP(X-UP)%" %RESPONSE_CODE%'
)
#: What the upstream answers every request with: obs-text (NEL, a line break to
#: Unicode-aware readers) in a header, as llhttp takes it.
ANSWER = (
    b"HTTP/1.1 200 OK\r\nX-Up: up\x85stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
)
#: A server name Python's ssl (OpenSSL) sends as it is given.
FORGING_SNI = "evil\n[2026-01-01T00:00:00.000Z] forged.example.com"


def request(path: str, user_agent: bytes = b"") -> bytes:
    ua = b"User-Agent: " + user_agent + b"\r\n" if user_agent else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + ua + b"Connection: close\r\n\r\n"


async def h2_request_over_tls(port: int, pki: Pki, headers: list[tuple[bytes, bytes]]) -> int:
    """One HTTP/2 request (ALPN h2) with exactly `headers`; its status."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, pki.client_context(["h2"]), server_hostname="localhost")
    client = RawH2Client(tls)  # type: ignore[arg-type]
    async with tls:
        client.conn.initiate_connection()
        await client.flush()
        client.conn.send_headers(client.conn.get_next_available_stream_id(), headers, True)
        await client.flush()
        events = await client.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
    return int(next(dict(e.headers)[b":status"] for e in events if hasattr(e, "headers")))


async def test_no_peer_can_forge_an_access_log_line(nursery, pki, tmp_path):
    up_port, _ = await start_scripted_upstream(nursery, ANSWER)
    text, envoy, js = (tmp_path / n for n in ("text.log", "envoy.log", "json.log"))
    logs = [
        {"path": str(text), "flush_interval": "0s", "text_format": TEXT_FORMAT},
        {"path": str(envoy), "flush_interval": "0s"},  # Envoy's default format
        {
            "path": str(js),
            "flush_interval": "0s",
            "json_format": {"sni": "%REQUESTED_SERVER_NAME%", "line": TEXT_FORMAT},
        },
    ]
    config = ConfigBuilder(admin=False)
    config.server(drain_timeout="2s")
    config.filter_chain(
        tls={"certificates": [pki.issue("localhost", "*.example.com").table()]},
        filters=[
            {"type": "http_connection_manager", "virtual_hosts": ["main"], "access_log": logs}
        ],
    )
    config.virtual_host("main", route(cluster="backend"))
    config.cluster("backend", up_port, connect_timeout="1s")
    any_name = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    any_name.check_hostname, any_name.verify_mode = False, ssl.CERT_NONE

    async with run_gateway(config) as gw:
        port = gw.listener_ports["edge"]
        bystander = await tls_exchange(port, "localhost", pki.client_context(), request("/by"))
        assert bystander.response.startswith(b"HTTP/1.1 200 ")
        # A server name with a line break; obs-text (NEL) in a header, as HTTP/1.1 allows.
        forged = await tls_exchange(port, FORGING_SNI, any_name, request("/sni", b"ua\x85x"))
        assert forged.response.startswith(b"HTTP/1.1 200 ")
        # Over HTTP/2: terminal escapes, VT, FF, FS/GS/RS, DEL, a quote and a backslash.
        status = await h2_request_over_tls(
            port,
            pki,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"local\x0bhost"),
                (b":path", b"/h2\x1b[2J\x0cx"),
                (b"user-agent", b"ua\x1c\x1d\x1e\x7f"),
                (b"x-note", b'"forged" \\ q'),
            ],
        )
        assert status == 200
        again = await tls_exchange(port, "localhost", pki.client_context(), request("/again"))
        assert again.response.startswith(b"HTTP/1.1 200 ")
        await eventually(lambda: js.exists() and js.read_bytes().count(b"\n") == 4)

    for log in (text, envoy, js):
        raw = log.read_bytes()
        # Four requests, four lines, however the reader splits them.
        assert raw.count(b"\n") == 4 and len(raw.decode().splitlines()) == 4, raw
        assert re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", raw.decode()) is None, raw
    assert text.read_text().splitlines() == [
        r'localhost GET "/by" "x" "-" "-" "up\x85stream" 200',
        r'- GET "/sni" "x" "ua\x85x" "-" "up\x85stream" 200',
        r'localhost GET "/h2\x1B[2J\x0Cx" "local\x0Bhost" "ua\x1C\x1D\x1E\x7F" '
        r'"\x22forged\x22 \x5C q" "up\x85stream" 200',
        r'localhost GET "/again" "x" "-" "-" "up\x85stream" 200',
    ]
    envoy_lines = envoy.read_text().splitlines()
    assert [line.split('"')[1] for line in envoy_lines] == [
        "GET /by HTTP/1.1",
        "GET /sni HTTP/1.1",
        r"GET /h2\x1B[2J\x0Cx HTTP/2",
        "GET /again HTTP/1.1",
    ]
    assert r'"ua\x85x"' in envoy_lines[1] and r'"ua\x1C\x1D\x1E\x7F"' in envoy_lines[2]
    rows = [json.loads(line) for line in js.read_text().splitlines()]
    assert [row["sni"] for row in rows] == ["localhost", None, "localhost", "localhost"]
    # JSON escapes on its own: the values stay as the peers sent them (latin-1 decoded).
    assert rows[1]["line"] == '- GET "/sni" "x" "ua\x85x" "-" "up\x85stream" 200'
    assert rows[2]["line"] == (
        'localhost GET "/h2\x1b[2J\x0cx" "local\x0bhost" "ua\x1c\x1d\x1e\x7f" '
        '""forged" \\ q" "up\x85stream" 200'
    )
