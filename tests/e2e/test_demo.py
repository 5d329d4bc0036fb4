"""The first five minutes: the shipped gateway.toml in front of `gateway demo-upstreams`,
driven as the README's "Try it" does: HTTP, a WebSocket echo, gRPC calls (grpcio and curl
over h2c), and a streaming call seen in flight in the live task tree."""

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.helpers import Served, free_port, serving

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def demo_upstreams(ports: list[int]) -> AsyncIterator[None]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "demo-upstreams", *(f"127.0.0.1:{p}" for p in ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        said = b""
        with trio.fail_after(20):
            while said.count(b"listening") < len(ports):
                said += await process.stdout.receive_some(4096)
        yield
    finally:
        process.kill()
        await process.wait()


@asynccontextmanager
async def shipped_gateway(tmp_path: Path) -> AsyncIterator[tuple[Served, int, int]]:
    """The repo's gateway.toml as shipped, on free ports: (served, edge port, admin port)."""
    edge, admin, up1, up2 = (free_port() for _ in range(4))
    text = (ROOT / "gateway.toml").read_text()
    for old, new in (("10000", edge), ("9901", admin), ("8080", up1), ("8081", up2)):
        assert f"127.0.0.1:{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    async with demo_upstreams([up1, up2]), serving(config) as served:
        yield served, edge, admin


async def shown_in_tree(admin: int, text: str) -> None:
    """Waits until the live task tree (text form) shows `text`."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(5):
            while (
                text not in (await client.get(f"http://127.0.0.1:{admin}/tasks?format=text")).text
            ):
                await trio.sleep(0.05)


def grpc_calls(port: int) -> tuple[bytes, list[bytes], grpc.StatusCode]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary("/demo.Echo/Echo")(b"hello", timeout=10)
        ticks = list(channel.unary_stream("/demo.Echo/Ticks")(b"2", timeout=10))
        try:
            channel.unary_unary("/demo.Echo/Nope")(b"x", timeout=10)
        except grpc.RpcError as error:
            return echo, ticks, error.code()
    raise AssertionError("an unknown method answered")


async def test_the_shipped_config_carries_http_websocket_and_grpc_as_the_readme_shows(
    tmp_path: Path,
) -> None:
    async with shipped_gateway(tmp_path) as (_, edge, admin):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge}") as client:
            answer = (await client.get("/v1/hello")).json()
            assert answer["path"] == "/hello" and answer["headers"]["x-gateway"] == "1"
            assert answer["server"].startswith("demo-")

        async with open_websocket_url(f"ws://127.0.0.1:{edge}/ws") as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"

            echo, ticks, unknown = await trio.to_thread.run_sync(grpc_calls, edge)
            assert echo == b"hello"
            assert ticks == [b"tick 1", b"tick 2"]
            assert unknown is grpc.StatusCode.UNIMPLEMENTED

            # The open WebSocket is a tunnel in the live tree.
            await shown_in_tree(admin, "path=/ws")

        if shutil.which("curl") is None:
            pytest.skip("the README's curl call needs curl: apt-get install curl")
        curl = [
            "curl", "-s", "--http2-prior-knowledge",
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--data-binary", "@-",
        ]  # fmt: skip
        called = await trio.run_process(
            [*curl, f"localhost:{edge}/demo.Echo/Echo"],
            stdin=b"\0\0\0\0\5hello",
            capture_stdout=True,
        )
        assert called.stdout == b"\0\0\0\0\5hello"  # the message, length-prefixed

        # A streaming call (a tick a second) is in the live tree while it runs.
        streamed: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                done = await trio.run_process(
                    [*curl, f"localhost:{edge}/demo.Echo/Ticks"],
                    stdin=b"\0\0\0\0\0013",
                    capture_stdout=True,
                )
                streamed.append(done.stdout)

            nursery.start_soon(stream)
            await shown_in_tree(admin, "stream 1 POST /demo.Echo/Ticks")
        assert streamed[0].count(b"tick") == 3
