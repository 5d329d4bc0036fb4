"""The task tree as a debugging tool: real slow requests, WebSocket tunnels and gRPC calls
found in /tasks with their annotations, narrowed by filters, and cancelled from admin."""

import functools
import json
import sys

import grpc
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.admin_helpers import cancel, nodes, tasks, wait_for_node
from tests.config_builder import proxy_config
from tests.grpc_echo import OPTIONS, echo_config, start_server
from tests.helpers import (
    admin_url,
    eventually,
    read_until,
    run_gateway,
    start_upstream,
    url,
)
from tests.ws_echo import start_echo_server


async def test_slow_request_annotations_and_filters(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            node = await wait_for_node(
                client, gw, kind="stream", state="waiting for upstream response headers"
            )
            assert node["listener"] == "edge"
            assert node["cluster"] == "backend"
            assert node["route"] == "main/0"
            assert node["upstream_host"] == f"127.0.0.1:{up.port}"
            assert node["method"] == "GET" and node["path"] == "/hang"
            assert (node["bytes_received"], node["bytes_sent"]) == (0, 0)
            # The route timeout (15 s by default) is the stream's deadline.
            assert 10 < node["deadline_s"] <= 15
            assert node["cancellable"] is True and isinstance(node["id"], int)
            (conn,) = nodes(await tasks(client, gw), kind="connection")
            assert conn["bytes_received"] == len(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn["bytes_sent"] == 0

            only_edge = await tasks(client, gw, listener="edge")
            assert [n["name"] for n in nodes(only_edge, kind="listener")] == ["listener edge"]
            assert not list(nodes(only_edge, kind="cluster"))
            assert "children" not in await tasks(client, gw, listener="nope")
            by_cluster = await tasks(client, gw, cluster="backend")
            assert [n["path"] for n in nodes(by_cluster, kind="stream")] == ["/hang"]
            assert [n["name"] for n in nodes(by_cluster, kind="cluster")] == ["cluster backend"]
            assert not list(nodes(by_cluster, kind="admin"))
            by_state = await tasks(client, gw, state="upstream response")
            kinds = [n["kind"] for n in nodes(by_state) if "kind" in n]
            assert kinds == ["listener", "connection", "stream"]
            assert not list(nodes(await tasks(client, gw, older_than="1h"), kind="stream"))
            assert list(nodes(await tasks(client, gw, older_than="0s"), kind="stream"))
            bad = await client.get(admin_url(gw, "/tasks"), params={"older_than": "soon"})
            assert bad.status_code == 400 and "older_than" in bad.text


async def test_cancel_a_stream_answers_the_client_and_closes_the_upstream(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            node = await wait_for_node(client, gw, kind="stream", path="/hang")
            await eventually(lambda: up.requests)
            r = await cancel(client, gw, node["id"])
            assert (r.status_code, r.text) == (200, f"cancelled task {node['id']} (stream)\n")
            reply = await read_until(stream, b"operator")
            assert reply.startswith(b"HTTP/1.1 503 ")
            assert b"connection: close" in reply.lower()
            with trio.fail_after(2):
                while await stream.receive_some(65536):
                    pass  # the gateway closes the connection after its reply
            with trio.fail_after(2):
                await up.disconnected.wait()
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_admin_cancel") == 1)
        assert not list(nodes(await tasks(client, gw), kind="stream"))
        again = await cancel(client, gw, node["id"])
        assert again.status_code == 404


async def test_cancel_a_connection_closes_it(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        async with httpx.AsyncClient() as proxied:
            assert (await proxied.get(url(gw, "/first"))).status_code == 200
            conn = await wait_for_node(client, gw, kind="connection", state="idle")
            assert conn["requests"] == 1 and conn["bytes_sent"] > 0
            assert 0 < conn["deadline_s"] <= 300  # the idle timeout
            assert (await cancel(client, gw, conn["id"])).status_code == 200
            await eventually(
                lambda: (
                    gw.stats.value("http.edge.downstream_cx_admin_cancel") == 1
                    and gw.stats.value("http.edge.downstream_cx_active") == 0
                )
            )
            # The pooled client connection was closed: the next request needs a new one.
            assert (await proxied.get(url(gw, "/second"))).status_code == 200
        assert gw.stats.value("http.edge.downstream_cx_total") == 2


async def test_cancel_refusals(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        listener = await wait_for_node(client, gw, kind="listener")
        refused = await cancel(client, gw, listener["id"])
        assert refused.status_code == 409 and "cannot be cancelled" in refused.text
        assert (await cancel(client, gw, 999999)).status_code == 404
        assert (await cancel(client, gw, "abc")).status_code == 400
        get = await client.get(admin_url(gw, f"/tasks/{listener['id']}/cancel"))
        assert get.status_code == 405


async def test_websocket_tunnel_in_tasks_and_cancelled(nursery):
    echo = await start_echo_server(nursery)
    config = proxy_config(echo.port, listener={"upgrade": ["websocket"]})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        ws_url = f"ws://127.0.0.1:{gw.listener_ports['edge']}/chat"
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            node = await wait_for_node(client, gw, kind="tunnel")
            assert node["path"] == "/chat" and node["upstream"] == f"127.0.0.1:{echo.port}"
            assert node["bytes_up"] > 0 and node["bytes_down"] > 0
            assert node["cancellable"] is True
            assert (await cancel(client, gw, node["id"])).status_code == 200
            with pytest.raises(ConnectionClosed), trio.fail_after(2):
                await ws.get_message()
        with trio.fail_after(2):
            await echo.closed.wait()
        assert gw.stats.value("http.edge.downstream_rq_admin_cancel") == 1


async def test_grpc_call_in_tasks_and_cancelled():
    server, port, servicer = start_server()
    try:
        async with (
            run_gateway(echo_config(port, match={"prefix": "/", "grpc": True})) as gw,
            httpx.AsyncClient() as client,
        ):
            target = f"127.0.0.1:{gw.listener_ports['edge']}"
            with grpc.insecure_channel(target, options=OPTIONS) as channel:
                call = channel.unary_unary("/test.Echo/Unary").future(b"sleep", timeout=10)
                assert await trio.to_thread.run_sync(servicer.started.wait, 5)
                node = await wait_for_node(client, gw, kind="stream", path="/test.Echo/Unary")
                assert node["state"] == "waiting for upstream response headers"
                assert node["cluster"] == "echo" and node["method"] == "POST"
                assert node["bytes_received"] > 0  # the request message
                (conn,) = nodes(await tasks(client, gw, cluster="echo"), kind="connection")
                assert conn["protocol"] == "HTTP/2" and conn["open_streams"] == 1
                assert (await cancel(client, gw, node["id"])).status_code == 200
                error = await trio.to_thread.run_sync(call.exception, 5)
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert error.details() == "stream cancelled by the gateway operator"
                cancelled = functools.partial(servicer.cancelled.wait, 5)
                assert await trio.to_thread.run_sync(cancelled), "the upstream call was cancelled"
    finally:
        server.stop(grace=None)


async def test_task_tree_off(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    config.table("admin", task_tree=False)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/x"))).status_code == 200
        tree = await tasks(client, gw)
        assert "listener edge" in [n["name"] for n in nodes(tree)]
        assert not [n for n in nodes(tree) if "kind" in n]


async def test_tasks_websocket_filters_and_cli_sorted_by_age(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET /hang?token=secret HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: up.requests)
            admin = f"127.0.0.1:{gw.admin_port}"
            async with open_websocket_url(f"ws://{admin}/tasks/ws?state=upstream") as ws:
                tree = json.loads(await ws.get_message())["tree"]
            assert [n["path"] for n in nodes(tree, kind="stream")] == ["/hang?[redacted]"]
            assert not list(nodes(tree, kind="cluster"))
            command = [sys.executable, "-m", "gateway", "tasks", "--admin", admin]
            result = await trio.run_process(
                [*command, "--listener", "edge"], capture_stdout=True, capture_stderr=True
            )
            asked = await trio.run_process(
                [*command, "--show-query"], capture_stdout=True, capture_stderr=True
            )
    assert "[stream] stream 1 GET /hang?token=secret" in asked.stdout.decode()
    assert b"secret" not in result.stdout
    lines = result.stdout.decode().splitlines()
    assert any("[stream] stream 1 GET /hang?[redacted]" in line for line in lines)
    assert not any("[cluster]" in line for line in lines)
    # Oldest first: the listener's connection (opened before the stream) precedes accept.
    edge = next(i for i, line in enumerate(lines) if "[listener] listener edge" in line)
    assert "[connection]" in lines[edge + 1]
