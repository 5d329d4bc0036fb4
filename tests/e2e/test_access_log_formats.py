"""Access logs with Envoy command operators, JSON formats, several logs per listener and
filters; W3C trace context and x-request-id on the way upstream."""

import json
import re

import httpx
import pytest
import trio

from gateway import loads_config
from gateway.errors import ConfigError
from tests.config_builder import proxy_config, route
from tests.helpers import eventually, run_gateway, start_upstream, url

TRACE = "0af7651916cd43dd8448eb211c80319c"


async def test_operators_json_format_several_logs_and_filters(nursery, tmp_path):
    up = await start_upstream(nursery)
    text, js, errors, slow = (tmp_path / n for n in ("text.log", "json.log", "5xx.log", "slow.log"))
    fmt = (
        "%START_TIME(%Y-%m-%d %H:%M:%S.%3f)% %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% "
        "%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% "
        "%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME% %REQ(USER-AGENT):4% "
        "%RESP(CONTENT-TYPE)% %TRACE_ID% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    )
    json_format = {
        "code": "%RESPONSE_CODE%",
        "line": "%REQ(:METHOD)% %REQ(:PATH)%",
        "duration": "%DURATION%",
        "host": "%UPSTREAM_HOST%",
        "rid": "%REQ(X-REQUEST-ID)%",
    }
    logs = [
        {"path": str(text), "flush_interval": "0s", "text_format": fmt},
        {"path": str(js), "flush_interval": "0s", "json_format": json_format},
        {"path": str(errors), "flush_interval": "0s", "filter": {"min_status_code": 500}},
        {"path": str(slow), "flush_interval": "0s", "filter": {"min_duration": "300ms"}},
    ]
    async with (
        run_gateway(proxy_config(up.port, listener={"access_log": logs})) as gw,
        httpx.AsyncClient() as client,
    ):
        headers = {"user-agent": "tester", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        await client.post(url(gw, "/echo?x=1"), content=b"12345", headers=headers)
        await client.get(url(gw, "/status/503"))
        await client.get(url(gw, "/slow?delay=0.4"))
        await eventually(lambda: len(js.read_text().splitlines()) == 3)

    first = text.read_text().splitlines()[0]
    pattern = (
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} POST /echo\?x=1 HTTP/1\.1 200 - 5 \d+ "
        rf"127\.0\.0\.1:{up.port} backend main/0 test application/json {TRACE} 127\.0\.0\.1"
    )
    assert re.fullmatch(pattern, first), first
    rows = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["code"] for r in rows] == [200, 503, 200]  # a lone operator keeps its type
    assert rows[0]["line"] == "POST /echo?x=1"
    assert rows[0]["host"] == f"127.0.0.1:{up.port}" and isinstance(rows[0]["duration"], int)
    assert len(rows[0]["rid"]) == 36  # the x-request-id the gateway made
    assert [line.split('"')[1] for line in errors.read_text().splitlines()] == [
        "GET /status/503 HTTP/1.1"
    ]
    assert [line.split('"')[1] for line in slow.read_text().splitlines()] == [
        "GET /slow?delay=0.4 HTTP/1.1"
    ]


async def test_missing_values_and_response_flags_filter(nursery, tmp_path):
    log = tmp_path / "uf.log"
    fmt = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %RESP(X-NONE)% %RESPONSE_DURATION%"
    ok_route = route(match={"path": "/ok"}, direct_response={"status": 200})
    flagged = {
        "path": str(log),
        "flush_interval": "0s",
        "text_format": fmt,
        "filter": {"response_flags": ["UF", "UT"]},
    }
    # Port 1: nothing listens there, so proxied requests fail with UF.
    config = proxy_config(1, listener={"access_log": [flagged]}, routes=[ok_route])
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/ok"))).status_code == 200
        assert (await client.get(url(gw, "/down"))).status_code == 502
        await eventually(lambda: log.exists() and log.read_text())
    assert log.read_text() == "502 UF 127.0.0.1:1 - -\n"


async def test_a_clients_trace_gets_a_new_span_per_hop_and_none_is_made_up(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        parent = f"00-{TRACE}-00f067aa0ba902b7-01"
        seen = (await client.get(url(gw, "/t"), headers={"traceparent": parent})).json()
        fresh = (await client.get(url(gw, "/t"), headers={"x-request-id": "rid-7"})).json()
        bad = (await client.get(url(gw, "/t"), headers={"traceparent": "00-zz-yy-01"})).json()
    version, trace, span, flags = seen["headers"]["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE, "01")
    assert span != "00f067aa0ba902b7" and re.fullmatch("[0-9a-f]{16}", span)
    assert "traceparent" not in fresh["headers"]  # no trace started: nobody records it
    assert fresh["headers"]["x-request-id"] == "rid-7"
    assert bad["headers"]["traceparent"] == "00-zz-yy-01"  # not ours to mend


def test_unknown_operator_is_a_config_error():
    config = proxy_config(1, listener={"access_log": [{"text_format": "%REQ(:METHOD)% %NOPE%"}]})
    with pytest.raises(ConfigError) as error:
        loads_config(config.toml())
    assert error.value.errors == [
        "listeners.edge.access_log[0].text_format: must use known operators: "
        "unknown command operator %NOPE%"
    ]


async def test_requests_cut_by_a_shutdown_are_logged(nursery, tmp_path, caplog):
    """A shutdown that cancels everything cancels a listener's connections and its access
    log flusher at once; the cut requests log on their way out, into a log that must still
    be open."""
    up = await start_upstream(nursery)
    log = tmp_path / "access.log"
    config = proxy_config(
        up.port,
        listener={"access_log": {"path": str(log), "format": "json", "flush_interval": "1s"}},
    )
    async with httpx.AsyncClient() as client, trio.open_nursery() as clients:
        with trio.CancelScope() as shutdown:
            async with run_gateway(config) as gw:
                assert (await client.get(url(gw, "/before"))).status_code == 200

                async def hang() -> None:
                    with pytest.raises(httpx.HTTPError):
                        await client.get(url(gw, "/hang"))

                for _ in range(HUNG):
                    clients.start_soon(hang)
                await eventually(lambda: sum(r.path == "/hang" for r in up.requests) == HUNG)
                # Everything at once, as when the process is told to stop for good.
                shutdown.cancel()
                await trio.sleep_forever()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/before"] + ["/hang"] * HUNG
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


HUNG = 8
