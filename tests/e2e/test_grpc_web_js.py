"""A published gRPC-Web client through the gateway: grpc-web, the grpc project's own
JavaScript client (from the npm registry, bundled with esbuild: tests/js_bundles.py), in
node and in headless Chromium, in its text and binary modes, calling the grpcio echo server
through `grpc_web`: unary and server streaming, a server's error, the gateway's own error,
and a non-gRPC answer. In Chromium the page comes from another origin, so every call
passes a CORS preflight for grpc-web's headers, as on a real site."""

import json
import shutil

import pytest
import trio

from gateway.admin.asgi import complete_lifespan
from tests import js_bundles
from tests.grpc_echo import start_server
from tests.grpc_web_client import web_config
from tests.helpers import run_gateway, serve_asgi, start_upstream

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FORMATS = pytest.mark.parametrize("mode", ["text", "binary"])


@pytest.fixture(scope="module")
def bundles() -> js_bundles.Bundles:
    try:
        return js_bundles.build()
    except js_bundles.Missing as missing:
        pytest.skip(str(missing))


@pytest.fixture
def echo_port():
    server, port, _ = start_server()
    yield port
    server.stop(grace=None)


def check(result: dict, mode: str, label: str) -> None:
    """What the library reported for each call (tests/js/grpc_web_calls.js)."""
    assert result["format"] == mode
    assert result["unary"] == {
        "message": f"hello from {label}",
        "status": {"code": 0, "details": "", "metadata": {"x-served-by": "echo"}},
    }
    assert result["failing"]["error"] == {"code": 3, "message": "bad input"}  # INVALID_ARGUMENT
    assert result["down"]["error"] == {"code": 14, "message": "no healthy upstream"}
    # grpc-web reads an HTTP 503 as UNAVAILABLE itself (the status the gateway adds agrees).
    assert result["plain503"]["error"]["code"] == 14
    assert result["stream"] == {
        "messages": [str(i) for i in range(50)],
        "status": {"code": 0, "details": ""},
    }


@FORMATS
async def test_grpc_web_library_in_node(bundles, echo_port, nursery, mode):
    plain = await start_upstream(nursery, "plain")
    async with run_gateway(web_config(echo_port, plain.port)) as gw:
        base = f"http://127.0.0.1:{gw.listener_ports['edge']}"
        with trio.fail_after(15):
            done = await trio.run_process(
                ["node", str(bundles.node), base, mode], capture_stdout=True, capture_stderr=True
            )
    check(json.loads(done.stdout), mode, "node")
    assert gw.stats.value("http.edge.grpc_web.total") == 5


def _page(script: str):
    """An ASGI app serving the test page, from an origin other than the gateway's."""
    html = f"""<!doctype html><html><body><pre id="result">pending</pre>
<script>{script}</script></body></html>""".encode()

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": html})

    return app


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary: apt-get install chromium")
@FORMATS
async def test_grpc_web_library_in_chromium(bundles, echo_port, nursery, mode):
    assert CHROMIUM is not None
    plain = await start_upstream(nursery, "plain")
    page = await serve_asgi(nursery, _page(bundles.browser.read_text()))
    config = web_config(echo_port, plain.port, origin=f"http://127.0.0.1:{page}")
    async with run_gateway(config) as gw:
        base = f"http://127.0.0.1:{gw.listener_ports['edge']}"
        with trio.fail_after(15):
            done = await trio.run_process(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    f"http://127.0.0.1:{page}/?base={base}&format={mode}",
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
    dom = done.stdout.decode()
    start = dom.index('<pre id="result" data-done="1">') + len('<pre id="result" data-done="1">')
    result = json.loads(dom[start : dom.index("</pre>", start)].replace("&amp;", "&"))
    check(result, mode, "chromium")
    assert gw.stats.value("http.edge.grpc_web.total") == 5
    # grpc-web's headers are not CORS-safelisted: each of the four URLs was preflighted
    # once (the browser keeps the answer for max_age, so the second Unary call was not).
    assert gw.stats.value("http.edge.cors.preflights") == 4
