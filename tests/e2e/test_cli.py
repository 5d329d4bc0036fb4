"""The `gateway` command as an operator runs it: validate, serve, signals, drain."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from gateway import StartupError, loads_config, open_gateway
from gateway.cli import build_parser
from tests.config_builder import local, proxy_config
from tests.helpers import free_port, run_gateway, serving, start_upstream

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


async def run_cli_async(*args: str) -> subprocess.CompletedProcess[bytes]:
    """`gateway ARGS` in a subprocess, while this test's gateway serves."""
    return await trio.run_process(
        [*GATEWAY, *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[bytes]]:
    """Runs the commands side by side (each pays Python's start-up), in order of `commands`."""
    done: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def one(index: int, args: tuple[str, ...]) -> None:
        done[index] = await run_cli_async(*args)

    async with trio.open_nursery() as nursery:
        for index, args in enumerate(commands):
            nursery.start_soon(one, index, args)
    return [done[i] for i in range(len(commands))]


def one_line_error(result: subprocess.CompletedProcess[bytes], text: str) -> None:
    """The command failed with status 1 and one line on standard error that holds `text`,
    its last (before it, only what it logged while it ran), and no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert text in stderr.splitlines()[-1], stderr
    assert stderr.count("gateway ") == 1, stderr


def test_version_help_and_log_level_in_any_case(capsys):
    """Argument parsing only (each `gateway` process pays ~1.7 s of imports): the
    version, the commands `--help` lists (not the internal `_worker`), any-case levels."""
    parser = build_parser()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("gateway ")
    text = parser.format_help()
    for command in ("serve", "validate", "tasks", "explain", "demo-upstreams"):
        assert f"\n    {command}" in text, text
    assert "_worker" not in text
    assert parser.parse_args(["serve", "g.toml", "--log-level", "INFO"]).log_level == "info"
    assert parser.parse_args(["_worker", "g.toml", "--index", "0"]).command == "_worker"


async def test_explain_prints_the_answer_and_mistakes_are_one_line(nursery):
    up = await start_upstream(nursery)
    down = f"127.0.0.1:{free_port()}"
    async with run_gateway(proxy_config(up.port)) as gw:
        admin = f"127.0.0.1:{gw.admin_port}"
        text, as_json, bad_url, no_admin, refused = await run_all(
            ("explain", "http://x/a?b=1", "-H", "x-user: alice", "--admin", admin),
            ("explain", "http://x/a", "-X", "post", "--json", "--admin", admin),
            ("explain", "gopher://x/", "--admin", admin),
            ("explain", "http://x/", "--admin", down),
            ("tasks", "--admin", admin, "--older-than", "soon"),
        )
    out = text.stdout.decode()
    assert text.returncode == 0, text.stderr
    assert out.startswith("GET http://x/a?b=1\n") and "  x-user: alice\n" in out
    assert "\nroutes          (in order; the first that matches wins)\n" in out
    assert out.splitlines()[-1] == (
        "verdict         proxied to cluster backend (1 of 1 hosts of backend can be picked)"
    )
    answer = json.loads(as_json.stdout)
    assert answer["request"]["method"] == "POST" and answer["route"] == "main/0"
    one_line_error(bad_url, "gateway explain: bad url 'gopher://x/': the scheme must be")
    one_line_error(no_admin, f"gateway explain: cannot reach the admin at {down}: ")
    one_line_error(refused, f"gateway tasks: the admin at {admin} refused: older_than: ")


async def test_tasks_and_demo_upstreams_mistakes_are_one_line():
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    down = f"127.0.0.1:{free_port()}"
    with taken:
        no_admin, bad_admin, in_use, bad_address = await run_all(
            ("tasks", "--admin", down),
            ("tasks", "--admin", "localhost"),
            ("demo-upstreams", "127.0.0.1:0", f"127.0.0.1:{port}"),
            ("demo-upstreams", "localhost"),
        )
    one_line_error(no_admin, f"gateway tasks: cannot reach the admin at {down}: all attempts")
    one_line_error(bad_admin, "gateway tasks: bad --admin address: ")
    one_line_error(in_use, f"gateway demo-upstreams: cannot bind 127.0.0.1:{port}: ")
    assert in_use.stdout.decode().startswith("demo upstream listening on 127.0.0.1:")
    one_line_error(bad_address, "gateway demo-upstreams: bad address: ")
