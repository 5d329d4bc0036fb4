"""The benchmark package (bench/): the gateway configs it generates load, its parsers read
the load generators' reports, and `python bench/run.py` starts from any directory. The
TOML text is what is under test here, so no config builder."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.filters_cost import chain_toml
from bench.grpc_web_cost import grpc_web_toml
from bench.load.h2load import parse_h2load
from bench.load.wrk import parse_wrk
from bench.peers.gateway import gateway_grpc_toml, gateway_toml, quic_listener, tls_listener
from bench.tasktree_cost import with_task_tree
from bench.ws_scale import gateway_config
from gateway import loads_config
from tests.tls_helpers import Pki

ROOT = Path(__file__).resolve().parents[2]

WRK = """\
Running 1s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.46ms    1.20ms  13.16ms   80.00%
    Req/Sec    13.51k     1.00k   14.00k    70.00%
  Latency Distribution
     50%    3.46ms
     75%    4.00ms
     90%    5.00ms
     99%   1.02s
  13510 requests in 1.00s, 2.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  13510.00
Transfer/sec:      2.10MB
"""

H2LOAD = """\
starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Application protocol: h2c
finished in 1.00s, 58261.00 req/s, 1.95MB/s
requests: 58300 total, 58361 started, 58300 done, 58261 succeeded, 30 failed, 5 errored, 4 timeout
status codes: 58261 2xx, 0 3xx, 2 4xx, 1 5xx
traffic: 1.95MB (2044398) total, 571.34KB (585049) headers (space savings 95.00%), 682.74KB (699132) data
                     min         max         mean         sd        +/- sd
time for request:      118us     12.48ms       650us       664us    75.12%
time for connect:      151us       413us       262us        95us    70.00%
"""  # noqa: E501


@pytest.mark.parametrize(
    "config",
    [
        lambda: gateway_toml(10000, 8080),
        lambda: gateway_toml(10000, 8080, 2),
        lambda: gateway_toml(10000, 8080, h2_upstream=True),
        lambda: gateway_grpc_toml(10000, 8080),
        lambda: chain_toml(10000, 8080),
        lambda: with_task_tree(True)(10000, 8080),
        lambda: with_task_tree(False)(10000, 8080),
        lambda: gateway_config(10000, 8080),
        lambda: grpc_web_toml(10000, 8080),
    ],
    ids=["http", "workers", "h2-upstream", "grpc", "filters", "tree-on", "tree-off", "ws", "web"],
)
def test_generated_configs_load(config):
    loads_config(config())


@pytest.mark.parametrize(
    ("config", "workers"),
    [
        (lambda: gateway_toml(10000, 8080), 1),
        (lambda: gateway_toml(10000, 8080, 2), 2),
        (lambda: gateway_grpc_toml(10000, 8080), 1),
        (lambda: gateway_config(10000, 8080), 1),
    ],
    ids=["http", "workers", "grpc", "ws"],
)
def test_generated_configs_say_how_many_workers(config, workers):
    """The single-worker rows stay one process, whatever the default (one per core)."""
    assert loads_config(config()).server.workers == workers


def test_tls_config_loads(tmp_path):
    cert = Pki(tmp_path).issue("localhost")
    listener = tls_listener(Path(cert.certificate_chain), Path(cert.private_key))
    config = loads_config(gateway_toml(10000, 8080, listener=listener))
    assert config.listeners["edge"].filter_chains[0].tls is not None


def test_parse_wrk():
    sample = parse_wrk(WRK)
    assert (sample.rps, sample.requests) == (13510.0, 13510)
    assert (sample.p50_ms, sample.p99_ms) == (3.46, 1020.0)
    assert sample.errors == 2 + 1 + 3


def test_parse_h2load():
    sample = parse_h2load(H2LOAD)
    assert (sample.rps, sample.requests, sample.mean_ms) == (58261.0, 58261, 0.65)
    assert sample.errors == 30 + 5 + 4 + 2 + 1
    with pytest.raises(ValueError, match="did not speak h2c"):
        parse_h2load(H2LOAD.replace("h2c", "h2"))


@pytest.mark.parametrize(
    ("argv", "cwd"),
    [([str(ROOT / "bench" / "run.py")], "tmp"), (["-m", "bench"], "root")],
    ids=["script", "module"],
)
def test_entry_points_start(argv, cwd, tmp_path):
    """The script from another directory (it puts the checkout on sys.path), the module
    from the checkout."""
    out = subprocess.run(
        [sys.executable, *argv, "--help"],
        cwd=tmp_path if cwd == "tmp" else ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "--sections" in out.stdout


def test_quic_config_loads(tmp_path):
    """The http3 section's gateway: a `protocol = "quic"` listener with the certificate."""
    cert = Pki(tmp_path).issue("localhost")
    listener = quic_listener(Path(cert.certificate_chain), Path(cert.private_key))
    config = loads_config(gateway_toml(10000, 8080, listener=listener))
    edge = config.listeners["edge"]
    assert edge.protocol == "quic" and len(edge.quic.certificates) == 1
