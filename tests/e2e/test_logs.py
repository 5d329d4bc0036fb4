"""Application logs: `[server] log_format = "json"` (one object per line, with the task
path of the code that logged), and `--log-level debug`'s lines per connection and stream."""

import json

import httpx

from tests.config_builder import proxy_config
from tests.helpers import serving, start_upstream


async def test_json_lines_carry_the_task_path_and_debug_says_what_each_request_did(
    nursery, tmp_path
):
    up = await start_upstream(nursery)
    boom = {"type": "python", "module": "tests.filter_samples:Boom", "config": {"path": "/boom"}}
    config = proxy_config(up.port, http_filters={"boom": boom})
    config.server(workers=1, log_format="json")
    path = tmp_path / "g.toml"
    path.write_text(config.toml())
    async with serving(path, "gateway started", "--log-level", "debug") as served:
        base = f"http://127.0.0.1:{served.port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/ok?token=secret")).status_code == 200
            assert (await client.get(f"{base}/boom")).status_code == 500
        async with httpx.AsyncClient(http1=False, http2=True) as h2:
            assert (await h2.get(f"{base}/h2")).status_code == 200
        await served.read_log_until(b"HTTP/2, 1 requests")  # the h2c connection closed
    entries = [json.loads(line) for line in served.log.decode().splitlines()]
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert all(e["time"].endswith("Z") and "T" in e["time"] for e in entries)
    debug = [e for e in entries if e["level"] == "DEBUG"]
    # Only the gateway's own: hpack's debug lines would print every header.
    assert {e["logger"] for e in debug} == {"gateway.http"}

    def one(start: str, end: str = "") -> dict:
        (entry,) = [
            e for e in entries if e["message"].startswith(start) and e["message"].endswith(end)
        ]
        return entry

    accepted = one("connection from 127.0.0.1:", "accepted on edge: HTTP/1.1")
    peer = accepted["message"].split()[2]
    assert accepted["task_path"] == ["listener edge", f"conn {peer}"]
    started = one(f"stream 1 from {peer} started")
    assert "GET /ok?[redacted] HTTP/1.1" in started["message"]
    stream = ["listener edge", f"conn {peer}", "stream 1 GET /ok?[redacted]"]
    assert started["task_path"] == stream
    assert started["task_id"] > accepted["task_id"]
    ended = one(f"stream 1 from {peer} ended")
    assert ended["task_path"] == stream
    assert "GET /ok?[redacted] -> 200 in " in ended["message"]
    assert f"cluster backend, upstream host 127.0.0.1:{up.port}" in ended["message"]
    closed = one(f"connection from {peer} closed")
    assert "HTTP/1.1, 2 requests" in closed["message"]
    # The request's secret stays out of the log, in messages and task names alike.
    assert "secret" not in served.log.decode()
    # A traceback is a field of its line, whose task path says which request it was.
    failed = one("http filter boom failed")
    assert failed["level"] == "ERROR" and failed["logger"] == "gateway.filters"
    assert failed["task_path"] == ["listener edge", f"conn {peer}", "stream 2 GET /boom"]
    assert "RuntimeError: the filter's own bug" in failed["exception"]
    h2_ended = [e for e in debug if "GET /h2 -> 200" in e["message"]]
    assert h2_ended and h2_ended[0]["task_path"][-1] == "stream 1 GET /h2"
