"""The `gateway` command as an operator runs it: validate, serve, signals, drain."""

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from gateway import StartupError, loads_config, open_gateway
from tests.config_builder import local, proxy_config
from tests.helpers import serving, start_upstream

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = [sys.executable, "-m", "gateway"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=30)


def test_validate_ok():
    result = run_cli("validate", str(ROOT / "gateway.toml"))
    assert result.returncode == 0
    assert "OK: 1 listener(s)" in result.stdout


def test_validate_lists_every_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[listeners.edge]\naddress = "127.0.0.1:1"\nvirtual_hosts = ["nope"]\n'
        '[clusters.c]\nendpoints = ["x:1"]\nconect_timeout = "1s"\n'
    )
    result = run_cli("validate", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "clusters.c: unknown key 'conect_timeout' (did you mean 'connect_timeout'?)" in (
        result.stderr
    )
    missing = run_cli("validate", str(tmp_path / "missing.toml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    bad.write_text("[listeners\n")
    syntax = run_cli("validate", str(bad))
    assert syntax.returncode == 1 and "line 1" in syntax.stderr
    bad.write_text("a = " + "[" * 1000 + "]" * 1000 + "\n")  # past tomli's nesting limit
    deep = run_cli("validate", str(bad))
    assert deep.returncode == 1 and "Traceback" not in deep.stderr
    assert "TOML nested too deeply" in deep.stderr


async def test_bind_failure_names_the_listener():
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = proxy_config(1, listener={"address": local(port)})
    with pytest.raises(StartupError, match=rf"listeners.edge: cannot bind 127.0.0.1:{port}"):
        async with open_gateway(loads_config(config.toml())):
            pass
    taken.close()


async def test_drain_finishes_in_flight_requests_and_refuses_new_ones(nursery):
    up = await start_upstream(nursery)
    async with httpx.AsyncClient() as client:
        results = []
        async with open_gateway(loads_config(proxy_config(up.port).toml())) as gw:
            port = gw.listener_ports["edge"]

            async def slow() -> None:
                r = await client.get(f"http://127.0.0.1:{port}/slow?delay=0.3")
                results.append((r.status_code, r.text, r.headers.get("connection")))

            nursery.start_soon(slow)
            while not up.requests:
                await trio.sleep(0.01)
        # open_gateway returned: the drain waited for the in-flight request.
        assert results == [(200, "slow done", "close")]
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_serve_drains_on_sigterm_and_exits_zero(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(proxy_config(up.port).toml())
    async with serving(config) as served, httpx.AsyncClient() as client:
        results = []

        async def slow() -> None:
            r = await client.get(f"http://127.0.0.1:{served.port}/slow?delay=0.5")
            results.append(r.status_code)

        async with trio.open_nursery() as n:
            n.start_soon(slow)
            while not up.requests:
                await trio.sleep(0.01)
            served.process.send_signal(signal.SIGTERM)
        assert results == [200]
        with trio.fail_after(10):
            assert await served.process.wait() == 0


async def test_admin_bind_failure_and_bad_access_log_path_are_clean_errors(tmp_path):
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = proxy_config(1)
    config.table("admin", address=local(port))
    with pytest.raises(StartupError, match=rf"admin.address: cannot bind 127.0.0.1:{port}"):
        async with open_gateway(loads_config(config.toml())):
            pass
    taken.close()
    missing = tmp_path / "no" / "such" / "dir" / "access.log"
    config = proxy_config(1, listener={"access_log": {"path": str(missing)}})
    with pytest.raises(StartupError, match=r"listeners.edge.access_log.path: cannot open"):
        async with open_gateway(loads_config(config.toml())):
            pass
