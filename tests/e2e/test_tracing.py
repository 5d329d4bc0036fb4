"""Tracing: spans of real requests received by real OTLP collectors (gRPC and HTTP), their
parentage, timings and attributes; the trace headers upstreams see (W3C and B3); sampling;
a collector that is down or slow costs requests nothing."""

import functools

import grpc
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.admin_helpers import nodes, tasks
from tests.cluster_helpers import start_backends
from tests.config_builder import ConfigBuilder, proxy_config, route
from tests.grpc_echo import OPTIONS, start_server
from tests.helpers import eventually, free_port, run_gateway, start_upstream, url
from tests.otlp_collector import start_grpc_collector, start_http_collector
from tests.ws_echo import start_echo_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def traced(config: ConfigBuilder, port: int, protocol: str = "http", **keys: object) -> None:
    """Adds `[tracing]` (with `keys`) to `config`, exporting to a collector on `port`
    (cluster `otel`) quickly unless `keys` say otherwise: a flush every 20 ms, or as soon
    as one span waits."""
    config.cluster("otel", port, protocol="http2" if protocol == "grpc" else "http1")
    quick = {"flush_interval": "20ms", "min_flush_spans": 1}
    config.table(
        "tracing",
        collector_cluster="otel",
        protocol=protocol,
        service_name="edge-gateway",
        **{**quick, **keys},
    )


def one(spans, **wanted):
    found = [s for s in spans if all(getattr(s, k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, [(s.name, s.kind) for s in spans])
    return found[0]


async def test_a_retried_request_traced_over_grpc(nursery):
    (backend,) = await start_backends(nursery, 1)
    backend.fail_next = 1  # the first attempt gets 503, the retry 200
    server, port, received = start_grpc_collector()
    try:
        filters = {
            "mark": {"type": "header_mutation", "request_headers_to_add": {"x-mark": "1"}},
            "chaos": {"type": "fault", "delay": {"fixed_delay": "20ms"}},
        }
        retry = {"retry_policy": {"retry_on": ["5xx"], "retry_back_off": {"base_interval": "5ms"}}}
        config = proxy_config(backend.port, http_filters=filters, catch_all=retry)
        traced(config, port, "grpc")
        async with run_gateway(config) as gw, httpx.AsyncClient() as client:
            traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
            response = await client.get(
                url(gw, "/x?token=secret"), headers={"traceparent": traceparent}
            )
            assert response.status_code == 200
            await eventually(lambda: len(received.spans) >= 6)
            tree = await tasks(client, gw)
            (exporter,) = nodes(tree, kind="trace exporter")
            assert exporter["name"] == "trace exporter" and exporter["cluster"] == "otel"
            assert gw.stats.value("tracing.opentelemetry.grpc_reports_success") >= 1
            assert gw.stats.value("tracing.opentelemetry.spans_sent") == 6
            assert gw.stats.value("tracing.opentelemetry.spans_dropped") == 0
    finally:
        server.stop(grace=None)

    spans = received.spans
    assert len(spans) == 6, [(s.name, s.kind) for s in spans]
    assert {s.trace_id for s in spans} == {TRACE_ID}
    server_span = one(spans, kind="SERVER")
    assert server_span.parent_id == CLIENT_SPAN  # the client's span is the gateway's parent
    assert server_span.name == "GET"
    assert server_span.attributes == {
        "http.request.method": "GET",
        "url.path": "/x",  # no query string: it may carry a token
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": gw.listener_ports["edge"],
        "client.address": "127.0.0.1",
        "user_agent.original": f"python-httpx/{httpx.__version__}",
        "gateway.request_id": server_span.attributes["gateway.request_id"],
        "gateway.route": "main/0",
        "gateway.cluster": "backend",
        "gateway.upstream_host": f"127.0.0.1:{backend.port}",
        "http.response.status_code": 200,
    }
    assert server_span.status == ""
    assert server_span.resource["service.name"] == "edge-gateway"
    assert server_span.resource["service.instance.id"]
    assert server_span.resource["process.pid"] > 0

    # Only the filter that took time has a span: the 20 ms delay, not the header mutation.
    chaos = one(spans, name="filter chaos")
    assert not [s for s in spans if s.name == "filter mark"]
    assert chaos.parent_id == server_span.span_id and chaos.kind == "INTERNAL"
    assert chaos.attributes["gateway.filter.hook"] == "decode_headers"
    assert chaos.end - chaos.start >= 20_000_000

    # The attempts are siblings under the server span, in order, the second a retry.
    first, second = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start)
    for attempt in (first, second):
        assert attempt.parent_id == server_span.span_id
        assert attempt.name == "GET"
        assert attempt.within(server_span)
        assert attempt.start >= chaos.end  # the filters ran before any attempt
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == backend.port
        assert attempt.attributes["url.full"] == f"http://127.0.0.1:{gw.listener_ports['edge']}/x"
        assert attempt.attributes["network.protocol.version"] == "1.1"
        assert attempt.attributes["gateway.cluster"] == "backend"
    assert first.end <= second.start
    assert first.attributes["http.response.status_code"] == 503
    assert first.status == "ERROR" and first.attributes["error.type"] == "503"
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200 and second.status == ""
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["gateway.retry.reason"] == "5xx"

    # Each attempt waited for its pooled connection, within it.
    for attempt in (first, second):
        wait = one(spans, name="pool wait", parent_id=attempt.span_id)
        assert wait.within(attempt) and wait.status == ""

    # Each try told the upstream that its own span is the parent.
    assert [s["traceparent"] for s in backend.seen] == [
        f"00-{TRACE_ID}-{first.span_id}-01",
        f"00-{TRACE_ID}-{second.span_id}-01",
    ]


async def test_otlp_http_export_and_a_new_trace(nursery):
    up = await start_upstream(nursery)
    collector = await start_http_collector(nursery)
    config = proxy_config(up.port)
    traced(config, collector.port)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        response = await client.post(url(gw, "/new"), content=b"hello")
        assert response.status_code == 200
        await eventually(lambda: len(collector.received.spans) >= 3)
        assert gw.stats.value("tracing.opentelemetry.http_reports_success") >= 1
    spans = collector.received.spans
    assert set(collector.received.content_types) == {"application/x-protobuf"}
    server_span = one(spans, kind="SERVER")
    attempt = one(spans, kind="CLIENT")
    assert server_span.parent_id == "" and server_span.name == "POST"
    assert len(server_span.trace_id) == 32 and server_span.trace_id.strip("0")
    assert attempt.parent_id == server_span.span_id and attempt.trace_id == server_span.trace_id
    # A request that came without a trace starts one, and the upstream joins it.
    seen = response.json()["headers"]["traceparent"]
    assert seen == f"00-{server_span.trace_id}-{attempt.span_id}-01"


async def test_spans_waiting_at_shutdown_are_sent(nursery):
    up = await start_upstream(nursery)
    collector = await start_http_collector(nursery)
    config = proxy_config(up.port)
    traced(config, collector.port, flush_interval="1h", min_flush_spans=100)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/last"))).status_code == 200
        await trio.sleep(0.05)
        assert not collector.received.spans  # neither the timer nor the count has come
    assert len(collector.received.spans) == 3  # sent after the drain, before the end


@pytest.mark.parametrize("form", ["single", "multi"])
async def test_b3_in_and_out(nursery, form):
    up = await start_upstream(nursery)
    collector = await start_http_collector(nursery)
    config = proxy_config(up.port)
    traced(config, collector.port)
    trace64 = "a3ce929d0e0e4736"
    if form == "single":
        sent = {"b3": f"{trace64}-{CLIENT_SPAN}-1-0000000000000001"}
    else:
        sent = {
            "x-b3-traceid": trace64,
            "x-b3-spanid": CLIENT_SPAN,
            "x-b3-parentspanid": "0000000000000001",
            "x-b3-sampled": "1",
        }
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/b3"), headers=sent)
        await eventually(lambda: len(collector.received.spans) >= 3)
    trace_id = trace64.rjust(32, "0")
    server_span = one(collector.received.spans, kind="SERVER")
    attempt = one(collector.received.spans, kind="CLIENT")
    assert (server_span.trace_id, server_span.parent_id) == (trace_id, CLIENT_SPAN)
    headers = response.json()["headers"]
    # B3 goes on in the form it came in, naming the attempt; traceparent goes along.
    if form == "single":
        assert headers["b3"] == f"{trace_id}-{attempt.span_id}-1"
    else:
        assert headers["x-b3-traceid"] == trace_id
        assert headers["x-b3-spanid"] == attempt.span_id
        assert headers["x-b3-sampled"] == "1"
        assert "x-b3-parentspanid" not in headers  # it named the client's parent
    assert headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"


async def test_sampling_follows_the_caller_and_x_client_trace_id(nursery):
    up = await start_upstream(nursery)
    collector = await start_http_collector(nursery)
    config = proxy_config(up.port)
    traced(config, collector.port, sampling=0)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        plain = await client.get(url(gw, "/plain"))
        unsampled = f"00-{TRACE_ID}-{CLIENT_SPAN}-00"
        declined = await client.get(url(gw, "/declined"), headers={"traceparent": unsampled})
        sampled = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
        await client.get(url(gw, "/followed"), headers={"traceparent": sampled})
        await client.get(url(gw, "/forced"), headers={"x-client-trace-id": "debug-1"})
        await eventually(lambda: len(collector.received.named("GET")) >= 4)
        await trio.sleep(0.1)  # a span of an unsampled request would have come by now
    paths = {s.attributes["url.path"] for s in collector.received.spans if s.kind == "SERVER"}
    assert paths == {"/followed", "/forced"}
    # Not sampled, the trace still goes on (with its flag off) under a span id of ours.
    plain_tp = plain.json()["headers"]["traceparent"]
    assert plain_tp.startswith("00-") and plain_tp.endswith("-00")
    declined_tp = declined.json()["headers"]["traceparent"]
    assert declined_tp.startswith(f"00-{TRACE_ID}-") and declined_tp.endswith("-00")
    assert CLIENT_SPAN not in declined_tp


async def test_collector_down_costs_requests_nothing(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    traced(config, free_port(), max_cache_size=4, max_export_batch_size=4)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for _ in range(20):
            assert (await client.get(url(gw, "/x"))).status_code == 200

        def counted() -> bool:
            failed = gw.stats.value("tracing.opentelemetry.http_reports_failed")
            dropped = gw.stats.value("tracing.opentelemetry.spans_dropped")
            # Three spans per request (server, attempt, pool wait), none of them sent.
            return failed >= 1 and dropped == 60

        await eventually(counted)
        assert gw.stats.value("tracing.opentelemetry.spans_sent") == 0


async def test_a_slow_collector_never_blocks_a_request(nursery):
    up = await start_upstream(nursery)
    collector = await start_http_collector(nursery, delay=5.0)
    config = proxy_config(up.port)
    traced(config, collector.port, max_cache_size=4, max_export_batch_size=1, timeout="10s")
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        await client.get(url(gw, "/first"))  # a span of it leaves, and the export hangs
        await eventually(lambda: gw.stats.value("tracing.opentelemetry.http_reports_sent") == 1)
        with trio.fail_after(2):  # 20 requests, while the collector holds the export
            for _ in range(20):
                assert (await client.get(url(gw, "/x"))).status_code == 200
        # Of 63 spans (three a request), one is on its way and four wait in the buffer;
        # the others were dropped as they ended.
        assert len(gw.trace_exporter.buffer) == 4
        assert gw.stats.value("tracing.opentelemetry.spans_dropped") == 58
        assert gw.stats.value("tracing.opentelemetry.spans_sent") == 0


async def test_a_grpc_call_span_carries_the_grpc_status(nursery):
    echo, echo_port, _ = start_server()
    collector = await start_http_collector(nursery)
    try:
        config = ConfigBuilder()
        config.listener("edge", virtual_hosts=["grpc"])
        config.virtual_host("grpc", route(cluster="echo"))
        config.cluster("echo", echo_port, protocol="http2")
        traced(config, collector.port)
        async with run_gateway(config) as gw:
            target = f"127.0.0.1:{gw.listener_ports['edge']}"
            with grpc.insecure_channel(target, options=OPTIONS) as channel:
                unary = channel.unary_unary("/test.Echo/Unary")
                call = functools.partial(unary, b"fail", timeout=5)
                with pytest.raises(grpc.RpcError) as failed:
                    await trio.to_thread.run_sync(call)
                assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                ok = functools.partial(unary, b"fine", timeout=5)
                assert await trio.to_thread.run_sync(ok) == b"fine"
            await eventually(lambda: len(collector.received.named("test.Echo/Unary")) == 4)
    finally:
        echo.stop(grace=None)
    spans = collector.received.named("test.Echo/Unary")
    for kind in ("SERVER", "CLIENT"):
        for span in (s for s in spans if s.kind == kind):
            assert span.attributes["rpc.system"] == "grpc"
            assert span.attributes["rpc.service"] == "test.Echo"
            assert span.attributes["rpc.method"] == "Unary"
            assert span.attributes["http.response.status_code"] == 200
    by_status = {(s.kind, s.attributes["rpc.grpc.status_code"]): s for s in spans}
    assert set(by_status) == {("SERVER", 0), ("SERVER", 3), ("CLIENT", 0), ("CLIENT", 3)}
    # INVALID_ARGUMENT is the caller's fault: the server span is not failed, the client's is.
    assert by_status["SERVER", 3].status == ""
    assert by_status["CLIENT", 3].status == "ERROR"
    assert by_status["CLIENT", 3].attributes["error.type"] == "3"
    assert by_status["SERVER", 0].status == by_status["CLIENT", 0].status == ""
    assert by_status["SERVER", 3].attributes["network.protocol.version"] == "2"
    assert by_status["CLIENT", 3].attributes["network.protocol.version"] == "2"


async def test_a_websocket_tunnel_has_a_span(nursery):
    echo = await start_echo_server(nursery)
    collector = await start_http_collector(nursery)
    config = proxy_config(echo.port, listener={"upgrade": ["websocket"]})
    traced(config, collector.port)
    async with run_gateway(config) as gw:
        async with open_websocket_url(f"ws://127.0.0.1:{gw.listener_ports['edge']}/chat") as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
        await eventually(lambda: collector.received.named("tunnel"))
        await eventually(lambda: len(collector.received.spans) >= 4)
    spans = collector.received.spans
    server_span = one(spans, kind="SERVER")
    attempt = one(spans, kind="CLIENT")
    tunnel = one(spans, name="tunnel")
    assert server_span.attributes["http.response.status_code"] == 101
    assert tunnel.parent_id == attempt.span_id and tunnel.within(attempt)
    assert tunnel.attributes["gateway.tunnel.bytes_up"] > 0
    assert tunnel.attributes["gateway.tunnel.bytes_down"] > 0
